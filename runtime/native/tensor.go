package native

import (
	"github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/runtime"
)

// The conversions share numeric data with the message, never copy it.

func toProto(t runtime.Tensor) *flotillapb.Tensor {
	p := &flotillapb.Tensor{Name: t.Name, Dtype: int32(t.DType), Shape: t.Shape, Data: t.Data}
	if len(t.Strings) > 0 {
		p.Strings = make([][]byte, len(t.Strings))
		for i, s := range t.Strings {
			p.Strings[i] = []byte(s)
		}
	}
	return p
}

func fromProto(p *flotillapb.Tensor) runtime.Tensor {
	t := runtime.Tensor{Name: p.GetName(), DType: runtime.DType(p.GetDtype()), Shape: p.GetShape(), Data: p.GetData()}
	if t.Shape == nil {
		t.Shape = []int64{}
	}
	if t.DType != runtime.String && t.Data == nil {
		t.Data = []byte{}
	}
	if len(p.GetStrings()) > 0 {
		t.Strings = make([]string, len(p.GetStrings()))
		for i, s := range p.GetStrings() {
			t.Strings[i] = string(s)
		}
	}
	return t
}

func tensorsToProto(ts []runtime.Tensor) []*flotillapb.Tensor {
	out := make([]*flotillapb.Tensor, len(ts))
	for i, t := range ts {
		out[i] = toProto(t)
	}
	return out
}

func tensorsFromProto(ps []*flotillapb.Tensor) []runtime.Tensor {
	out := make([]runtime.Tensor, len(ps))
	for i, p := range ps {
		out[i] = fromProto(p)
	}
	return out
}

func infosToProto(is []runtime.TensorInfo) []*flotillapb.TensorInfo {
	out := make([]*flotillapb.TensorInfo, len(is))
	for i, x := range is {
		out[i] = &flotillapb.TensorInfo{Name: x.Name, Dtype: int32(x.DType), Shape: x.Shape}
	}
	return out
}

func infosFromProto(ps []*flotillapb.TensorInfo) []runtime.TensorInfo {
	out := make([]runtime.TensorInfo, len(ps))
	for i, p := range ps {
		out[i] = runtime.TensorInfo{Name: p.GetName(), DType: runtime.DType(p.GetDtype()), Shape: p.GetShape()}
		if out[i].Shape == nil {
			out[i].Shape = []int64{}
		}
	}
	return out
}
