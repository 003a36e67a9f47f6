//go:build !linux

package native

import (
	"errors"
	"os"
)

// channelsSupported: without memfd the host keeps to gRPC.
const channelsSupported = false

var errNoChannels = errors.New("infer channels need linux")

func newBuffer(int) (*os.File, []byte, error)    { return nil, nil, errNoChannels }
func mapBuffer(int, int) ([]byte, error)         { return nil, errNoChannels }
func unmapBuffer([]byte)                         {}
func socketPair() (*os.File, *os.File, error)    { return nil, nil, errNoChannels }
func sendFile(*os.File, []byte, *os.File) error  { return errNoChannels }
func readHeader(*os.File, []byte) ([]int, error) { return nil, errNoChannels }
func shutdown(*os.File)                          {}
func closeFds([]int)                             {}
