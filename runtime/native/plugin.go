package native

import (
	"context"
	"os"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/runtime"
)

// ProtocolVersion is the plugin protocol's version, negotiated in the
// go-plugin handshake and repeated in DescribeResponse.
//
// History:
//   - 1 (2026): Describe, Load, Unload, Infer; tensors inline in messages.
//   - 2 (2026): Infer channels beside gRPC (frame.go): a socket pair per
//     concurrent call, numeric tensors in shared memory. A host that
//     negotiates 2 passes the bootstrap socket as descriptor 3; gRPC Infer
//     still works and is the path for version 1 peers.
const ProtocolVersion = 2

// minProtocolVersion is the oldest protocol both sides still speak.
const minProtocolVersion = 1

// BinaryPrefix starts the file name of every runtime plugin binary.
const BinaryPrefix = "flotilla-runtime-"

// MaxMessageBytes bounds a gRPC message between host and plugin: tensors
// travel inline, so the 4 MiB default is far too small (a mobilenet batch
// of 8 is 4.8 MiB).
const MaxMessageBytes = 512 << 20

// pluginName is the one plugin a runtime binary serves.
const pluginName = "runtime"

// Handshake keeps a plugin binary from running by accident and a host from
// talking to something that is not a Flotilla runtime.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "FLOTILLA_RUNTIME_PLUGIN",
	MagicCookieValue: "c0f1d5a8-runtime-v1",
}

// GRPCPlugin is the go-plugin definition of a runtime plugin: the plugin
// process serves Impl, the host gets a flotillapb.RuntimeClient.
type GRPCPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	Impl runtime.Runtime // plugin side only

	server *Server // serves Impl; shared with the Infer channels
}

// GRPCServer registers the runtime service (plugin side).
func (p *GRPCPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	srv := p.server
	if srv == nil {
		srv = NewServer(p.Impl)
	}
	flotillapb.RegisterRuntimeServer(s, srv)
	return nil
}

// GRPCClient returns a flotillapb.RuntimeClient (host side).
func (p *GRPCPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return flotillapb.NewRuntimeClient(c), nil
}

// pluginSets offers every protocol version this build speaks; go-plugin
// picks the highest both sides do.
func pluginSets(srv *Server) map[int]plugin.PluginSet {
	sets := map[int]plugin.PluginSet{}
	for v := minProtocolVersion; v <= ProtocolVersion; v++ {
		sets[v] = plugin.PluginSet{pluginName: &GRPCPlugin{server: srv}}
	}
	return sets
}

// gRPC flow-control windows: large tensors on the gRPC path (protocol 1
// peers, inputs the channels refuse) go in a few round trips, not one per
// 64 KiB.
const grpcWindowBytes = 16 << 20

// Serve serves rt as a runtime plugin; a plugin binary's main calls it. It
// returns when the host goes away. Run by hand, it says it is a plugin and
// exits.
func Serve(rt runtime.Runtime, logger hclog.Logger) {
	srv := NewServer(rt)
	if channelsSupported && os.Getenv(ChannelsEnv) == "3" {
		go serveChannels(os.NewFile(3, "bootstrap"), srv)
	}
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig:  Handshake,
		VersionedPlugins: pluginSets(srv),
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			return grpc.NewServer(append(opts, grpc.MaxRecvMsgSize(MaxMessageBytes), grpc.MaxSendMsgSize(MaxMessageBytes),
				grpc.InitialWindowSize(grpcWindowBytes), grpc.InitialConnWindowSize(grpcWindowBytes))...)
		},
		Logger: logger,
	})
}
