package flotillapb

import (
	"bytes"
	"testing"
)

// TestSupportChunkValidate: a chunk whose fields contradict each other or
// exceed the limits is refused before any receiver looks at it.
func TestSupportChunkValidate(t *testing.T) {
	sum := bytes.Repeat([]byte{1}, 32)
	ok := func() *SupportChunk {
		return &SupportChunk{UploadId: "u1", DeviceId: "d", Index: 0, Count: 2, TotalSize: 300 << 10, Sha256: sum, ChunkSha256: sum, Data: []byte("x")}
	}
	if err := ok().Validate(); err != nil {
		t.Fatalf("valid chunk refused: %v", err)
	}
	for name, bad := range map[string]func(*SupportChunk){
		"index past count":     func(c *SupportChunk) { c.Index = 2 },
		"no chunks":            func(c *SupportChunk) { c.Count, c.Index = 0, 0 },
		"too many chunks":      func(c *SupportChunk) { c.Count = MaxSupportChunks + 1 },
		"size beyond chunks":   func(c *SupportChunk) { c.TotalSize = 2*MaxSupportChunk + 1 },
		"short digest":         func(c *SupportChunk) { c.Sha256 = sum[:31] },
		"data over a chunk":    func(c *SupportChunk) { c.Data = make([]byte, MaxSupportChunk+1) },
		"signature over limit": func(c *SupportChunk) { c.Signature = make([]byte, MaxSupportSignature+1) },
		"upload id wildcard":   func(c *SupportChunk) { c.UploadId = "u/+" },
		"device id missing":    func(c *SupportChunk) { c.DeviceId = "" },
	} {
		c := ok()
		bad(c)
		if c.Validate() == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if (&Command{Id: "c", DeviceId: "d", Kind: &Command_SupportBundle{SupportBundle: &SupportBundle{UploadId: "../x"}}}).Validate() == nil {
		t.Error("a support-bundle command with a path in its upload ID was accepted")
	}
}
