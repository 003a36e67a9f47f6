package mosquitto

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// AdminRole is the role InitDynsec gives the admin: the plugin's control
// topics only, no application topic.
const AdminRole = "flotilla-dynsec-admin"

// InitDynsec writes a new dynamic-security JSON at path holding the admin
// client and Baseline default access, the equivalent of
// "mosquitto_ctrl dynsec init path user password" without needing that
// tool: the password hash is mosquitto's own PBKDF2-SHA512 (checked against
// mosquitto 2.0.11 in the tests). Unlike mosquitto_ctrl's admin, this one
// cannot read application topics. It refuses to overwrite an existing file,
// which would forget every enrolled device. The file is mode 0600: make it
// owned by the user mosquitto runs as.
func InitDynsec(path, adminUser, adminPassword string) error {
	if adminUser == "" || adminPassword == "" {
		return fmt.Errorf("init dynsec %s: empty admin user or password", path)
	}
	h, err := hashPassword(adminPassword)
	if err != nil {
		return err
	}
	var defaults = map[string]bool{}
	for k, v := range Baseline {
		defaults[k] = v
	}
	control := "$CONTROL/dynamic-security/#"
	doc := map[string]any{
		"defaultACLAccess": defaults,
		"clients": []map[string]any{{
			"username":   adminUser,
			"textname":   "Flotilla dynsec admin",
			"password":   h.key,
			"salt":       h.salt,
			"iterations": h.iterations,
			"roles":      []map[string]any{{"rolename": AdminRole}},
		}},
		"groups": []any{},
		"roles": []map[string]any{{
			"rolename": AdminRole,
			"acls": []map[string]any{
				acl("publishClientSend", control),
				acl("publishClientReceive", control),
				acl("subscribePattern", control),
				acl("unsubscribePattern", control),
			},
		}},
	}
	data, err := json.MarshalIndent(doc, "", "\t")
	if err != nil {
		return fmt.Errorf("init dynsec %s: %w", path, err)
	}
	return writeNew(path, append(data, '\n'))
}

// writeNew writes a file that must not exist yet, durably: a temporary
// file in the same folder, fsync, link into place (failing if path exists),
// fsync the folder.
func writeNew(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".dynsec-*")
	if err != nil {
		return fmt.Errorf("init dynsec: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("init dynsec: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("init dynsec: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("init dynsec: %w", err)
	}
	if err := os.Link(tmp, path); err != nil {
		if os.IsExist(err) {
			return fmt.Errorf("init dynsec %s: %w (it holds the enrolled devices)", path, fs.ErrExist)
		}
		return fmt.Errorf("init dynsec: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
