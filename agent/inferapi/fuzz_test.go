package inferapi

import (
	"errors"
	"os"
	"testing"

	"github.com/flotilla-edge/flotilla/runtime"
)

// FuzzDecodeRequest feeds hostile bodies to the request decoder: it must
// never panic, every error must be a bad request, and whatever it accepts
// is a valid tensor of the schema's type, or a shared memory reference of
// the tensor's byte size. The seed corpus runs in every
// `go test`.
func FuzzDecodeRequest(f *testing.F) {
	if b, err := os.ReadFile("testdata/kserve/infer_request.json"); err == nil {
		f.Add(b, []byte(nil))
	}
	f.Add([]byte(`{"id":"1","inputs":[{"name":"input0","shape":[1,2],"datatype":"UINT32","data":[[1,2]]},{"name":"input1","shape":[3],"datatype":"BOOL","data":[true,false,true]}]}`), []byte(nil))
	f.Add([]byte(`{"inputs":[{"name":"input0","shape":[1,2],"datatype":"UINT32","parameters":{"binary_data_size":8}},{"name":"input1","shape":[3],"datatype":"BOOL","data":[1]}],"parameters":{"binary_data_output":true}}`), []byte{1, 0, 0, 0, 2, 0, 0, 0})
	f.Add([]byte(`{"inputs":[{"name":"input0","shape":[99999999999,99999999999],"datatype":"UINT32","data":[]}]}`), []byte(nil))
	f.Add([]byte(`{"inputs":[{"name":"input0","shape":[1,2],"datatype":"UINT32","data":[[[[[[1]]]]],2]}]}`), []byte(nil))
	f.Add([]byte(`{"inputs":[{"name":"s","shape":[2],"datatype":"BYTES","parameters":{"binary_data_size":9}}]}`), []byte{1, 0, 0, 0, 'a', 0, 0, 0, 0})
	f.Add([]byte(`{"inputs":[{"name":"input0","shape":[1,2],"datatype":"UINT32","parameters":{"shared_memory_region":"r","shared_memory_byte_size":8,"shared_memory_offset":16}},{"name":"input1","shape":[3],"datatype":"BOOL","data":[1,0,1]}]}`), []byte(nil))
	f.Add([]byte(`{"inputs":[{"name":"s","shape":[2],"datatype":"BYTES","parameters":{"shared_memory_region":"","shared_memory_byte_size":-1}}],"outputs":[{"name":"output0","parameters":{"shared_memory_region":"o"}}]}`), []byte(nil))
	f.Add([]byte(`{"inputs":[{"name":"input0","shape":[1,2],"datatype":"UINT32","parameters":{"shared_memory_region":"r","shared_memory_byte_size":8,"binary_data_size":8}}]}`), []byte{1, 0, 0, 0, 2, 0, 0, 0})
	ins, outs := exampleSchema()
	ins = append(ins, runtime.TensorInfo{Name: "s", DType: runtime.String, Shape: []int64{-1}})
	lim := Limits{MaxElements: 1 << 16}.withDefaults()
	f.Fuzz(func(t *testing.T, header, bin []byte) {
		d, err := decodeRequest(header, bin, ins, outs, lim)
		if err != nil {
			if !errors.Is(err, errBadRequest) {
				t.Fatalf("error is not a bad request: %v", err)
			}
			return
		}
		inShm := map[int]bool{}
		for _, sh := range d.shm {
			in := d.inputs[sh.index]
			if inShm[sh.index] || in.Data != nil || in.Strings != nil || sh.region == "" || sh.offset < 0 ||
				in.DType != runtime.String && sh.size != sh.elements*int64(in.DType.Size()) {
				t.Fatalf("accepted a bad shared memory input: %+v %+v", sh, in)
			}
			inShm[sh.index] = true
		}
		for i, in := range d.inputs {
			if inShm[i] {
				continue
			}
			if err := in.Validate(); err != nil {
				t.Fatalf("accepted an invalid tensor: %v", err)
			}
		}
	})
}
