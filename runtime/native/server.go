package native

import (
	"context"
	"errors"
	"strconv"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/runtime"
)

// Server serves a runtime.Runtime as the flotillapb.Runtime gRPC service
// (the plugin side). Models are named by ids it hands out.
type Server struct {
	flotillapb.UnimplementedRuntimeServer
	rt runtime.Runtime

	mu     sync.RWMutex
	models map[string]runtime.Model
	next   uint64
}

// NewServer serves rt.
func NewServer(rt runtime.Runtime) *Server {
	return &Server{rt: rt, models: map[string]runtime.Model{}}
}

// Describe reports the runtime's name, version and execution providers.
func (s *Server) Describe(context.Context, *flotillapb.DescribeRequest) (*flotillapb.DescribeResponse, error) {
	info := runtime.Info{Name: s.rt.Name(), ExecutionProviders: []string{"cpu"}}
	if d, ok := s.rt.(runtime.Describer); ok {
		info = d.Describe()
	}
	return &flotillapb.DescribeResponse{Name: info.Name, Version: info.Version, ExecutionProviders: info.ExecutionProviders, ProtocolVersion: ProtocolVersion}, nil
}

// Load loads a model and names it.
func (s *Server) Load(ctx context.Context, req *flotillapb.LoadRequest) (*flotillapb.LoadResponse, error) {
	m, err := s.rt.Load(ctx, runtime.LoadSpec{Dir: req.GetDir(), Entry: req.GetEntry(), Providers: req.GetProviders(), Options: req.GetOptions()})
	if err != nil {
		return nil, toStatus(err)
	}
	s.mu.Lock()
	s.next++
	id := "m" + strconv.FormatUint(s.next, 10)
	s.models[id] = m
	s.mu.Unlock()
	resp := &flotillapb.LoadResponse{ModelId: id, Inputs: infosToProto(m.Inputs()), Outputs: infosToProto(m.Outputs())}
	if lr, ok := m.(runtime.LoadResult); ok {
		resp.Provider, resp.FallbackReason = lr.Provider()
	}
	return resp, nil
}

// Unload closes a model.
func (s *Server) Unload(_ context.Context, req *flotillapb.UnloadRequest) (*flotillapb.UnloadResponse, error) {
	s.mu.Lock()
	m, ok := s.models[req.GetModelId()]
	delete(s.models, req.GetModelId())
	s.mu.Unlock()
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no model %q", req.GetModelId())
	}
	if err := m.Close(); err != nil {
		return nil, toStatus(err)
	}
	return &flotillapb.UnloadResponse{}, nil
}

// Infer runs a model.
func (s *Server) Infer(ctx context.Context, req *flotillapb.InferRequest) (*flotillapb.InferResponse, error) {
	out, err := s.infer(ctx, req.GetModelId(), tensorsFromProto(req.GetInputs()))
	if err != nil {
		return nil, toStatus(err)
	}
	return &flotillapb.InferResponse{Outputs: tensorsToProto(out)}, nil
}

// infer runs the model named id: the gRPC and the channel path both.
func (s *Server) infer(ctx context.Context, id string, in []runtime.Tensor) ([]runtime.Tensor, error) {
	s.mu.RLock()
	m, ok := s.models[id]
	s.mu.RUnlock()
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no model %q", id)
	}
	return m.Infer(ctx, in)
}

// toStatus carries the runtime's sentinel errors across gRPC as codes;
// fromStatus turns them back.
func toStatus(err error) error {
	if _, ok := status.FromError(err); ok {
		return err // a status already
	}
	code := codes.Internal
	switch {
	case errors.Is(err, runtime.ErrInvalidInput):
		code = codes.InvalidArgument
	case errors.Is(err, runtime.ErrUnsupported):
		code = codes.Unimplemented
	case errors.Is(err, runtime.ErrUnavailable):
		code = codes.Unavailable
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	}
	return status.Error(code, err.Error())
}
