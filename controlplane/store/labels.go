package store

import (
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

// Label limits, enforced on every write of a label map.
const (
	MaxLabels         = 64
	MaxLabelKeyLen    = 63
	MaxLabelValueLen  = 255 // in characters
	MaxDeviceIDLen    = 128
	maxTokenIDLen     = 128
	maxAuditTextBytes = 64 << 10
)

// ValidateLabelKey reports whether k is a valid label key: 1 to 63
// characters from [a-zA-Z0-9._/-].
func ValidateLabelKey(k string) error {
	if len(k) == 0 || len(k) > MaxLabelKeyLen {
		return fmt.Errorf("%w label key %q: must be 1 to %d characters", ErrInvalid, k, MaxLabelKeyLen)
	}
	for i := 0; i < len(k); i++ {
		if !isNameByte(k[i]) && k[i] != '/' {
			return fmt.Errorf("%w label key %q: only letters, digits and . _ / - are allowed", ErrInvalid, k)
		}
	}
	return nil
}

// ValidateLabels checks every key and value of labels and their number.
func ValidateLabels(labels map[string]string) error {
	if len(labels) > MaxLabels {
		return fmt.Errorf("%w labels: %d labels, at most %d allowed", ErrInvalid, len(labels), MaxLabels)
	}
	for k, v := range labels {
		if err := ValidateLabelKey(k); err != nil {
			return err
		}
		if !utf8.ValidString(v) || utf8.RuneCountInString(v) > MaxLabelValueLen {
			return fmt.Errorf("%w label %q: value must be valid UTF-8 of at most %d characters", ErrInvalid, k, MaxLabelValueLen)
		}
	}
	return nil
}

// ValidateDeviceID reports whether id is a valid device ID: 1 to 128
// characters from [a-zA-Z0-9._-], so that it is safe in MQTT topics, file
// names and URLs.
func ValidateDeviceID(id string) error {
	if !validName(id, MaxDeviceIDLen) {
		return fmt.Errorf("%w device id %q: must be 1 to %d letters, digits or . _ -", ErrInvalid, id, MaxDeviceIDLen)
	}
	return nil
}

func validName(s string, maxLen int) bool {
	if len(s) == 0 || len(s) > maxLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isNameByte(s[i]) {
			return false
		}
	}
	return true
}

func isNameByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '.' || c == '_' || c == '-'
}

// encodeLabels returns labels as JSON text; keys are sorted, so equal maps
// encode equally.
func encodeLabels(labels map[string]string) (string, error) {
	if len(labels) == 0 {
		return "{}", nil
	}
	b, err := json.Marshal(labels)
	if err != nil {
		return "", fmt.Errorf("encode labels: %w", err)
	}
	return string(b), nil
}

// decodeLabels parses JSON label text; the map is never nil.
func decodeLabels(text string) (map[string]string, error) {
	labels := map[string]string{}
	if text == "" || text == "{}" {
		return labels, nil
	}
	if err := json.Unmarshal([]byte(text), &labels); err != nil {
		return nil, fmt.Errorf("decode labels: %w", err)
	}
	return labels, nil
}
