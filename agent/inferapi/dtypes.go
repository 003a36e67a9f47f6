package inferapi

import "github.com/flotilla-edge/flotilla/runtime"

// The protocol's datatype names and runtime's types, both ways.
var (
	dtypeByName = map[string]runtime.DType{
		"BOOL": runtime.Bool, "UINT8": runtime.Uint8, "UINT16": runtime.Uint16, "UINT32": runtime.Uint32,
		"UINT64": runtime.Uint64, "INT8": runtime.Int8, "INT16": runtime.Int16, "INT32": runtime.Int32,
		"INT64": runtime.Int64, "FP16": runtime.Float16, "FP32": runtime.Float32, "FP64": runtime.Float64,
		"BYTES": runtime.String, "BF16": runtime.BFloat16,
	}
	nameByDType = func() map[runtime.DType]string {
		m := make(map[runtime.DType]string, len(dtypeByName))
		for n, d := range dtypeByName {
			m[d] = n
		}
		return m
	}()
)

func dtypeName(d runtime.DType) string {
	if n, ok := nameByDType[d]; ok {
		return n
	}
	return d.String()
}
