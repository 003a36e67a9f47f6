package inferapi

import (
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
)

// readRequestCases are requests both readers must decode alike.
var readRequestCases = []string{
	`{"id":"1","inputs":[{"name":"input0","shape":[1,2],"datatype":"UINT32","data":[[1,2]]}]}`,
	" \n{ \"inputs\" : [ { \"name\" : \"a\" , \"shape\" : [ 2 ] , \"datatype\" : \"FP32\" , \"data\" : [ 1.5e3 , -0.25 ] } ] } \t",
	`{"Inputs":[{"NAME":"a","Shape":[1],"DataType":"INT64","Data":[-9]}],"OUTPUTS":[{"Name":"o","Parameters":{"binary_data":true}}]}`,
	`{"id":"\u00e9\n\"x\"","inputs":[{"name":"s\\t","shape":[1],"datatype":"BYTES","data":["a\u0000b"]}]}`,
	`{"extra":{"deep":[1,{"k":[null,true,false,"s"]}]},"inputs":[{"name":"a","shape":[1],"datatype":"BOOL","data":[true],"more":[[[]]]}]}`,
	`{"id":null,"parameters":null,"inputs":[{"name":"a","shape":null,"datatype":null,"parameters":{"binary_data_size":4,"x":null},"data":null}],"outputs":null}`,
	`{"parameters":{"binary_data_output":true},"inputs":[],"outputs":[{},{"name":"o"}]}`,
	`{"inputs":[{"name":"a","shape":[0,-1,9223372036854775807],"datatype":"FP32","data":[]}]}`,
	`{}`,
}

func TestReadRequestMatchesEncodingJSON(t *testing.T) {
	if b, err := os.ReadFile("testdata/kserve/infer_request.json"); err == nil {
		readRequestCases = append(readRequestCases, string(b))
	}
	for _, c := range readRequestCases {
		var want inferRequest
		if err := json.Unmarshal([]byte(c), &want); err != nil {
			t.Fatalf("encoding/json refuses %s: %v", c, err)
		}
		got, err := readRequest([]byte(c))
		if err != nil {
			t.Fatalf("%s: %v", c, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", c, got, want)
		}
	}
}

func TestReadRequestRefusesWhatIsNotJSON(t *testing.T) {
	for _, c := range []string{
		``, ` `, `[]`, `"x"`, `{`, `{"inputs":[}`, `{"inputs":[{"name":"a",}]}`, `{"id":"1",}`, `{"id" "1"}`,
		`{"id":'1'}`, `{"id":"1"}x`, `{"id":"1"}{}`, "{\"id\":\"a\x01b\"}", `{"id":"\x"}`, `{"id":"\u12"}`,
		`{"inputs":[{"data":[01]}]}`, `{"inputs":[{"data":[1.]}]}`, `{"inputs":[{"data":[.5]}]}`, `{"inputs":[{"data":[1e]}]}`,
		`{"inputs":[{"data":[+1]}]}`, `{"inputs":[{"data":[NaN]}]}`, `{"inputs":[{"data":[tru]}]}`, `{"inputs":[{"data":[1 2]}]}`,
		`{"inputs":[{"data":[1,]}]}`, `{"inputs":[{"data":[[1],[2]}]}`, `{"x":{"a":1,"b"}}`, `{"x":{"a":1 "b":2}}`,
		`{"inputs":[{"shape":[1.5]}]}`, `{"inputs":[{"shape":[1e2]}]}`, `{"inputs":[{"shape":["1"]}]}`, `{"inputs":{}}`,
		`{"id":1}`, `{"inputs":[{"name":["a"]}]}`, `{"parameters":[]}`, `{"inputs":[{"shape":[99999999999999999999]}]}`,
		`{"x":` + strings.Repeat("[", 65) + strings.Repeat("]", 65) + `}`, "{}\x00", "{\x00}",
	} {
		if _, err := readRequest([]byte(c)); !errors.Is(err, errBadRequest) {
			t.Errorf("%q: %v, want a bad request", c, err)
		}
	}
}

// FuzzRequestReader checks the reader against encoding/json: what it
// accepts is JSON, and a request encoding/json decodes it decodes too,
// to the same fields when no key is repeated.
func FuzzRequestReader(f *testing.F) {
	for _, c := range readRequestCases {
		f.Add([]byte(c))
	}
	f.Add([]byte(`{"inputs":[{"name":"a","name":"b"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := readRequest(b)
		if err == nil && !json.Valid(b) {
			t.Fatalf("accepted what is not JSON: %q", b)
		}
		if err != nil && !errors.Is(err, errBadRequest) {
			t.Fatalf("error is not a bad request: %v", err)
		}
		var want inferRequest
		if json.Unmarshal(b, &want) != nil {
			return
		}
		if err != nil {
			if strings.Contains(err.Error(), "nested more than") || strings.Contains(err.Error(), "dimensions") {
				return // our nesting bound; encoding/json's is 10000
			}
			t.Fatalf("refused what encoding/json decodes: %q: %v", b, err)
		}
		if !repeatsKeys(b) && !reflect.DeepEqual(got, want) && validUTF8Strings(b) {
			t.Fatalf("%q:\n got %+v\nwant %+v", b, got, want)
		}
	})
}

// repeatsKeys reports whether any object in the JSON b repeats a key
// (case-insensitively): encoding/json then merges into what it decoded
// first, which the reader does not copy for slices.
func repeatsKeys(b []byte) bool {
	dec := json.NewDecoder(strings.NewReader(string(b)))
	type frame struct {
		obj    bool
		keys   map[string]bool
		expKey bool
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{', '[':
				if top != nil && top.obj {
					top.expKey = true
				}
				stack = append(stack, &frame{obj: v == '{', keys: map[string]bool{}, expKey: true})
			default:
				stack = stack[:len(stack)-1]
			}
			continue
		case string:
			if top != nil && top.obj && top.expKey {
				k := strings.ToLower(v)
				if top.keys[k] {
					return true
				}
				top.keys[k] = true
				top.expKey = false
				continue
			}
		}
		if top != nil && top.obj {
			top.expKey = true
		}
	}
}

// validUTF8Strings: encoding/json replaces invalid UTF-8 in strings with
// U+FFFD, the reader keeps the bytes (a name that matches nothing).
func validUTF8Strings(b []byte) bool { return strings.ToValidUTF8(string(b), "\uFFFD") == string(b) }

func TestAppendJSONStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{"", "digits", "1", "a b_c-d.e", `q"uote`, `back\slash`, "new\nline", "<html>&", "é", "\x7f", "\xff"} {
		want, _ := json.Marshal(s)
		if got := appendJSONString(nil, s); string(got) != string(want) {
			t.Errorf("%q: %s, want %s", s, got, want)
		}
	}
}
