package flotctl

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/flotilla-edge/flotilla/controlplane/api"
	"github.com/flotilla-edge/flotilla/controlplane/apiclient"
)

// maxPasswordFile caps what is read of a password file.
const maxPasswordFile = 4 << 10

// users manages console users (admin). A password never goes on the
// command line, where other users of the machine could read it: it comes
// from -password-file or $FLOTILLA_PASSWORD.
func users(ctx context.Context, c *apiclient.Client, o out, getenv func(string) string, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: users list|create|set|disable", errUsage)
	}
	passwordFrom := func(file string) (string, error) {
		if file == "" {
			return getenv("FLOTILLA_PASSWORD"), nil
		}
		f, err := os.Open(file)
		if err != nil {
			return "", fmt.Errorf("password file: %w", err)
		}
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(f, maxPasswordFile+1))
		if err != nil {
			return "", fmt.Errorf("password file: %w", err)
		}
		if len(b) > maxPasswordFile {
			return "", fmt.Errorf("password file: over %d bytes", maxPasswordFile)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	switch args[0] {
	case "list", "ls":
		us, err := c.ListUsers(ctx)
		if err != nil {
			return err
		}
		if us == nil {
			us = []api.UserView{}
		}
		return o.print(us, func(tw io.Writer) {
			fmt.Fprintln(tw, "NAME\tROLE\tCREATED\tDISABLED\tLAST LOGIN")
			for _, u := range us {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", u.Name, u.Role, u.CreatedAt.Format("2006-01-02 15:04"), when(u.DisabledAt), ago(u.LastLoginAt))
			}
		})
	case "create", "set":
		fs := subFlags("users " + args[0])
		role := fs.String("role", "", "viewer, operator or admin")
		pwFile := fs.String("password-file", "", "file holding the password (default: $FLOTILLA_PASSWORD)")
		pos, err := parseInterspersed(fs, args[1:])
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return fmt.Errorf("%w: users %s NAME [-role R] [-password-file F]", errUsage, args[0])
		}
		pw, err := passwordFrom(*pwFile)
		if err != nil {
			return err
		}
		var u api.UserView
		if args[0] == "create" {
			if pw == "" {
				return fmt.Errorf("%w: users create needs a password: -password-file F or $FLOTILLA_PASSWORD", errUsage)
			}
			u, err = c.CreateUser(ctx, api.UserRequest{Name: pos[0], Role: or(*role, "viewer"), Password: pw})
		} else {
			if *role == "" && pw == "" {
				return fmt.Errorf("%w: users set needs -role or a password", errUsage)
			}
			u, err = c.UpdateUser(ctx, pos[0], api.UserPatch{Role: *role, Password: pw})
		}
		if err != nil {
			return err
		}
		return o.print(u, func(tw io.Writer) { fmt.Fprintf(tw, "%s\t%s\n", u.Name, u.Role) })
	case "disable":
		name, err := oneID(args[1:], "users disable")
		if err != nil {
			return err
		}
		return c.DisableUser(ctx, name)
	}
	return fmt.Errorf("%w: unknown users command %q", errUsage, args[0])
}
