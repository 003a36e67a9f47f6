// Package bundle builds model and agent bundles on the control plane side
// and keeps them in a content-addressed store.
//
// Build walks a folder and makes its manifest (flotilla.v1.BundleManifest):
// metadata from the folder's bundle.toml (see config.go for the format),
// and every other regular file, sorted by path, split into fixed-size
// chunks per file (default 256 KiB, so one changed file never shifts the
// chunks of another), each named by its SHA-256. The manifest is encoded
// deterministically: the same folder gives the same bytes and the same
// digest (the lowercase hex SHA-256 of those bytes), whatever the files'
// times, owners, or the order the file system lists them in. Modes are
// normalised to 0644, or 0755 when any execute bit is set.
//
// Build refuses symbolic links, device files, sockets and pipes, paths the
// manifest could not carry (see flotillapb.CheckBundlePath), and anything
// over the manifest's limits; it reads through an os.Root, so nothing
// outside the folder is ever read, even if the folder changes under it.
//
// Store keeps chunks by hash (chunks/ab/abcd…) and manifests by digest
// (manifests/<digest>) on disk, every file written atomically (temporary
// file, fsync, rename, fsync of the folder).
package bundle
