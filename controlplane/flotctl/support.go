package flotctl

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/api"
	"github.com/flotilla-edge/flotilla/controlplane/apiclient"
	"github.com/flotilla-edge/flotilla/controlplane/supportbundle"
)

// deviceSupport is `flotctl devices support-bundle ID [-o FILE] [-wait D]
// [-list] [-get UPLOAD]`: ask the device for a support bundle, wait while
// it uploads, and download it (FILE and FILE.sig); -list shows the
// device's bundles, -get downloads one already there.
func deviceSupport(ctx context.Context, c *apiclient.Client, o out, args []string) error {
	fs := subFlags("devices support-bundle")
	file := fs.String("o", "", "write the bundle here (default flotilla-support-ID-UPLOAD.tar.gz); its signature beside it as FILE.sig")
	wait := fs.Duration("wait", 30*time.Minute, "wait this long for the upload (it is paced by the device's telemetry budget)")
	list := fs.Bool("list", false, "list the device's support bundles instead")
	get := fs.String("get", "", "download this upload instead of asking for a new one")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: devices support-bundle ID [-o FILE] [-wait D] [-list] [-get UPLOAD]", errUsage)
	}
	id := pos[0]
	if *list {
		bs, err := c.SupportBundles(ctx, id)
		if err != nil {
			return err
		}
		return o.print(bs, func(tw io.Writer) {
			fmt.Fprintln(tw, "UPLOAD\tSTATE\tSIZE\tRECEIVED\tREQUESTED\tBY\tNOTE")
			for _, b := range bs {
				note := b.Error
				if note == "" {
					note = b.Verified
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\n", b.ID, b.State, b.Size, b.Received, b.RequestedAt.Format(time.RFC3339), b.RequestedBy, note)
			}
		})
	}
	upload := *get
	if upload == "" {
		b, err := c.RequestSupportBundle(ctx, id, 0)
		if err != nil {
			return err
		}
		upload = b.ID
		if !o.json {
			fmt.Fprintf(o.w, "%s is uploading support bundle %s (%d bytes)\n", id, upload, b.Size)
		}
	}
	deadline := time.Now().Add(*wait)
	var b api.SupportBundleView
	for {
		step := min(time.Until(deadline), time.Minute)
		if step < 0 {
			step = 0
		}
		if b, err = c.SupportBundle(ctx, id, upload, step); err != nil {
			return err
		}
		if b.State != supportbundle.StateUploading || step == 0 {
			break
		}
	}
	switch b.State {
	case supportbundle.StateFailed:
		return fmt.Errorf("support bundle %s failed: %s", upload, b.Error)
	case supportbundle.StateUploading:
		return fmt.Errorf("support bundle %s still uploading after %s (%d of %d bytes); fetch it later with -get %s", upload, *wait, b.Received, b.Size, upload)
	}
	out := *file
	if out == "" {
		out = fmt.Sprintf("flotilla-support-%s-%s.tar.gz", id, upload)
	}
	tmp := out + ".part"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	sig, err := c.DownloadSupportBundle(ctx, id, upload, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.WriteFile(out+".sig", sig, 0o644); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, out); err != nil {
		return err
	}
	return o.print(map[string]any{"bundle": out, "signature": out + ".sig", "upload": b}, func(tw io.Writer) {
		fmt.Fprintf(tw, "support bundle %s (%d bytes, %s), signature %s.sig\n", out, b.Size, b.Verified, out)
	})
}
