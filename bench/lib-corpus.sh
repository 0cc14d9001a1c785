# shellcheck shell=bash
# The benchmark corpus of bench/compare.sh, and the helpers it needs beyond
# tests/e2e/lib.sh (which must be sourced first: log, die, now, elapsed,
# show_log, debian_mirror, E2E_PIDS, stop_pid...).
#
# The corpus (docker images, built once and cached as `docker save` archives
# under BENCH_CACHE; a rerun with an unchanged recipe only `docker load`s):
#
#   bench/debian:b1 b2 b3     three `debootstrap --variant=minbase bookworm`
#                             runs of the same package set, minutes apart (so
#                             the generated files and mtimes differ), each
#                             `docker import`ed from a tar of the root
#   bench/nginx:v1 v2         nginx from apt on b1; v2 = v1 + changed
#                             index.html and site config
#   bench/pyapp:v1..v5        python3 from apt on b2, a venv of real wheels
#                             (numpy, pandas, sqlalchemy, flask, requests;
#                             ~150 MB) and app sources; each version bumps one
#                             or two pins and edits a few source files
#   bench/nodeapp:v1..v5      nodejs + npm from apt on b3, node_modules from
#                             the npm registry (typescript, webpack, eslint,
#                             babel, express, ...; ~100 MB) and sources; same
#                             kind of bumps
#
# Downloads are cached too (debootstrap .debs, pip wheels, npm cache and the
# installed node_modules), so rebuilding the images after a recipe change
# needs no network except apt inside the RUN steps of the base images.

BENCH_CACHE="${BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/blockreg-bench}"
BENCH_SUITE=bookworm

# The images in push order, and the groups they are built and cached in.
BENCH_GROUP_DEBIAN=(bench/debian:b1 bench/debian:b2 bench/debian:b3 bench/nginx:v1 bench/nginx:v2)
BENCH_GROUP_PY=(bench/pyapp:v1 bench/pyapp:v2 bench/pyapp:v3 bench/pyapp:v4 bench/pyapp:v5)
BENCH_GROUP_NODE=(bench/nodeapp:v1 bench/nodeapp:v2 bench/nodeapp:v3 bench/nodeapp:v4 bench/nodeapp:v5)

# ---------------------------------------------------------------- processes

# vm_hwm PID: peak resident set size of PID in bytes (0 if gone).
vm_hwm() {
    awk '/^VmHWM:/ { print $2 * 1024; found = 1 } END { if (!found) print 0 }' "/proc/$1/status" 2>/dev/null || echo 0
}

# ---------------------------------------------------------------- debian bases

declare -A BENCH_ROOTFS
# bench_rootfs N: the Nth debootstrap of the suite, as a tarball in the cache.
# The .debs are shared between the runs (--cache-dir), the install is not:
# every run unpacks and configures afresh, so generated files and mtimes
# differ between b1, b2 and b3 as between real rebuilds of a base image.
bench_rootfs() {
    local n="$1" arch mirror dir tmp tar
    arch="$(dpkg --print-architecture)"
    tar="$BENCH_CACHE/rootfs/debian-$BENCH_SUITE-minbase-$arch-b$n.tar"
    if [[ ! -s "$tar" ]]; then
        mirror="$(E2E_SUITE=$BENCH_SUITE debian_mirror)"
        log "debootstrap #$n of $BENCH_SUITE from $mirror"
        mkdir -p "$BENCH_CACHE/rootfs" "$BENCH_CACHE/debs"
        dir="$WORK_DIR/rootfs-b$n"
        rm -rf "$dir"
        debootstrap --variant=minbase --cache-dir="$BENCH_CACHE/debs" "$BENCH_SUITE" "$dir" "$mirror" \
            >"$LOG_DIR/debootstrap-b$n.log" 2>&1 \
            || { show_log "$LOG_DIR/debootstrap-b$n.log"; die "debootstrap #$n failed"; }
        rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* "$dir"/debootstrap
        tmp="$(mktemp "$BENCH_CACHE/rootfs/.tmp.XXXXXX")"
        tar --numeric-owner --xattrs -C "$dir" -cf "$tmp" . || die "tar of rootfs b$n failed"
        mv "$tmp" "$tar"
        sha256sum "$tar" | cut -d' ' -f1 >"$tar.sha256"
        rm -rf "$dir"
        # The next run should be visibly later (mtimes in whole seconds).
        sleep 2
    fi
    [[ -s "$tar.sha256" ]] || sha256sum "$tar" | cut -d' ' -f1 >"$tar.sha256"
    BENCH_ROOTFS[$n]="$tar"
}

# ---------------------------------------------------------------- recipes

# The recipes below are hashed (declare -f) into the cache keys: editing one
# rebuilds its group's images.

# recipe_nginx CTX VERSION: build context of bench/nginx:VERSION. Both share
# the apt layer (the legacy builder's cache); the last two layers differ.
recipe_nginx() {
    local dir="$1" v="$2"
    mkdir -p "$dir"
    cat >"$dir/Dockerfile" <<'EOF'
FROM bench/debian:b1
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx \
 && rm -rf /var/lib/apt/lists/*
COPY default.conf /etc/nginx/sites-available/default
COPY index.html /var/www/html/index.html
EXPOSE 80
CMD ["nginx", "-g", "daemon off;"]
EOF
    local ka=65 gz=off
    [[ "$v" == v2 ]] && { ka=30; gz=on; }
    cat >"$dir/default.conf" <<EOF
server {
    listen 80 default_server;
    root /var/www/html;
    index index.html;
    keepalive_timeout ${ka};
    gzip ${gz};
    location / { try_files \$uri \$uri/ =404; }
}
EOF
    printf '<!doctype html>\n<title>blockreg bench</title>\n<h1>nginx %s</h1>\n' "$v" >"$dir/index.html"
}

# recipe_pybase CTX / recipe_nodebase CTX: the language base images.
recipe_pybase() {
    mkdir -p "$1"
    cat >"$1/Dockerfile" <<'EOF'
FROM bench/debian:b2
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv python3-pip ca-certificates \
 && rm -rf /var/lib/apt/lists/*
EOF
}
recipe_nodebase() {
    mkdir -p "$1"
    cat >"$1/Dockerfile" <<'EOF'
FROM bench/debian:b3
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      nodejs npm ca-certificates \
 && rm -rf /var/lib/apt/lists/*
EOF
}

# py_requirements N: the pinned top-level requirements of pyapp vN.
py_requirements() {
    local numpy=1.26.2 pandas=2.1.3 requests=2.31.0 flask=3.0.0 sqlalchemy=2.0.23
    (($1 >= 2)) && flask=3.0.1
    (($1 >= 3)) && { pandas=2.1.4; sqlalchemy=2.0.25; }
    (($1 >= 4)) && { numpy=1.26.3; requests=2.32.3; }
    (($1 >= 5)) && { flask=3.0.3; sqlalchemy=2.0.30; }
    printf '%s\n' "numpy==$numpy" "pandas==$pandas" "requests==$requests" "flask==$flask" "sqlalchemy==$sqlalchemy"
}

# npm_bumps N: the `npm install` arguments of nodeapp vN (v1: all deps;
# later versions: one or two bumps on top of the previous lock file).
npm_bumps() {
    case "$1" in
        1) echo express@4.18.2 lodash@4.17.21 typescript@5.2.2 webpack@5.89.0 webpack-cli@5.1.4 \
            eslint@8.53.0 @babel/core@7.23.3 @babel/preset-env@7.23.3 rxjs@7.8.1 moment@2.29.4 \
            date-fns@2.30.0 axios@1.6.0 ;;
        2) echo typescript@5.3.2 ;;
        3) echo webpack@5.90.0 express@4.18.3 ;;
        4) echo eslint@8.56.0 ;;
        5) echo typescript@5.4.5 axios@1.6.7 ;;
    esac
}

# app_sources DIR LANG N: a small app tree; each version rewrites a version
# file and edits one or two modules, the rest stays byte-identical.
app_sources() {
    local dir="$1" lang="$2" n="$3" ext m i
    [[ "$lang" == py ]] && ext=py || ext=js
    mkdir -p "$dir"
    for m in main models views util config auth storage jobs; do
        {
            if [[ "$lang" == py ]]; then printf '# module %s of the blockreg bench app\n' "$m"; else printf '// module %s of the blockreg bench app\n' "$m"; fi
            for ((i = 0; i < 120; i++)); do
                if [[ "$lang" == py ]]; then
                    printf 'def %s_handler_%d(request, limit=%d):\n    return {"module": "%s", "n": %d, "limit": limit}\n\n' "$m" "$i" "$((i * 7))" "$m" "$i"
                else
                    printf 'exports.%sHandler%d = (req, limit = %d) => ({ module: "%s", n: %d, limit });\n' "$m" "$i" "$((i * 7))" "$m" "$i"
                fi
            done
        } >"$dir/$m.$ext"
    done
    # Version edits: v2 touches views, v3 models+util, v4 auth, v5 views+jobs.
    local edits=("" "" views "models util" auth "views jobs")
    local k e
    for ((k = 2; k <= n; k++)); do
        for e in ${edits[k]}; do
            if [[ "$lang" == py ]]; then
                printf '\ndef %s_feature_v%d(request):\n    return "added in v%d"\n' "$e" "$k" "$k" >>"$dir/$e.$ext"
            else
                printf '\nexports.%sFeatureV%d = () => "added in v%d";\n' "$e" "$k" "$k" >>"$dir/$e.$ext"
            fi
        done
    done
    if [[ "$lang" == py ]]; then
        printf '__version__ = "1.%d.0"\n' "$n" >"$dir/version.py"
        : >"$dir/__init__.py"
    else
        printf 'module.exports = "1.%d.0";\n' "$n" >"$dir/version.js"
    fi
}

# recipe_pyapp CTX N: context of bench/pyapp:vN. The wheels are installed in
# a build stage (so they are not part of the image) and the venv copied over.
recipe_pyapp() {
    local dir="$1" n="$2"
    mkdir -p "$dir"
    py_requirements "$n" >"$dir/requirements.txt"
    app_sources "$dir/app" py "$n"
    cat >"$dir/Dockerfile" <<'EOF'
FROM bench/pybase:1 AS build
COPY wheels /wheels
COPY requirements.txt /app/requirements.txt
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /wheels -r /app/requirements.txt

FROM bench/pybase:1
COPY --from=build /opt/venv /opt/venv
COPY requirements.txt /app/requirements.txt
COPY app /app/app
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
CMD ["python3", "-m", "app.main"]
EOF
}

# recipe_nodeapp CTX N: context of bench/nodeapp:vN (node_modules is put in
# by npm_modules).
recipe_nodeapp() {
    local dir="$1" n="$2"
    mkdir -p "$dir"
    app_sources "$dir/src" js "$n"
    cat >"$dir/Dockerfile" <<'EOF'
FROM bench/nodebase:1
WORKDIR /app
COPY package.json package-lock.json /app/
COPY node_modules /app/node_modules
COPY src /app/src
CMD ["node", "src/main.js"]
EOF
}

# ---------------------------------------------------------------- downloads

# py_wheels N: the wheels of pyapp vN (pip download once into the cache).
py_wheels() {
    local n="$1" d="$BENCH_CACHE/wheels/v$1"
    if [[ ! -f "$d/.done" ]]; then
        log "pip download for pyapp v$n"
        rm -rf "$d"
        mkdir -p "$d"
        py_requirements "$n" >"$d/requirements.txt"
        # The container's python is Debian's 3.11 on glibc 2.36.
        PIP_FIND_LINKS='' python3 -m pip download --only-binary=:all: --python-version 3.11 \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 --platform any \
            -d "$d" -r "$d/requirements.txt" >"$LOG_DIR/pip-download-v$n.log" 2>&1 \
            || { show_log "$LOG_DIR/pip-download-v$n.log"; die "pip download v$n failed"; }
        rm -f "$d/requirements.txt"
        touch "$d/.done"
    fi
    printf '%s\n' "$d"
}

# npm_modules N: package.json, package-lock.json and node_modules of nodeapp
# vN in the cache. v1 installs everything; vN starts from v(N-1)'s tree and
# lock and applies its bumps, as a developer would.
npm_modules() {
    local n="$1" d="$BENCH_CACHE/npm/v$1"
    if [[ ! -f "$d/.done" ]]; then
        log "npm install for nodeapp v$n"
        rm -rf "$d"
        if ((n == 1)); then
            mkdir -p "$d"
            printf '{\n  "name": "bench-nodeapp",\n  "version": "1.0.0",\n  "private": true\n}\n' >"$d/package.json"
        else
            local prev
            prev="$(npm_modules $((n - 1)))" || exit 2
            cp -a "$prev" "$d"
            rm -f "$d/.done"
        fi
        # shellcheck disable=SC2046
        (cd "$d" && npm install --save-exact --ignore-scripts --no-audit --no-fund \
            --cache "$BENCH_CACHE/npm-cache" $(npm_bumps "$n")) >"$LOG_DIR/npm-install-v$n.log" 2>&1 \
            || { show_log "$LOG_DIR/npm-install-v$n.log"; die "npm install v$n failed"; }
        touch "$d/.done"
    fi
    printf '%s\n' "$d"
}

# ---------------------------------------------------------------- building

# bench_build TAG CTX LOGNAME: docker build with the legacy builder (its
# layer cache shares identical steps between versions) and host networking.
bench_build() {
    DOCKER_BUILDKIT=0 docker build --network host -t "$1" "$2" >"$LOG_DIR/build-$3.log" 2>&1 \
        || { show_log "$LOG_DIR/build-$3.log"; die "docker build $1 failed"; }
}

bench_build_debian_group() {
    local n tar
    for n in 1 2 3; do
        tar="${BENCH_ROOTFS[$n]}"
        docker import --change 'CMD ["/bin/bash"]' "$tar" "bench/debian:b$n" >>"$LOG_DIR/docker-import.log" 2>&1 \
            || { show_log "$LOG_DIR/docker-import.log"; die "docker import b$n failed"; }
    done
    local v
    for v in v1 v2; do
        recipe_nginx "$WORK_DIR/ctx/nginx-$v" "$v"
        bench_build "bench/nginx:$v" "$WORK_DIR/ctx/nginx-$v" "nginx-$v"
    done
}

bench_build_py_group() {
    local n w
    recipe_pybase "$WORK_DIR/ctx/pybase"
    bench_build bench/pybase:1 "$WORK_DIR/ctx/pybase" pybase
    for n in 1 2 3 4 5; do
        w="$(py_wheels "$n")" || exit 2
        recipe_pyapp "$WORK_DIR/ctx/pyapp-v$n" "$n"
        cp -al "$w" "$WORK_DIR/ctx/pyapp-v$n/wheels" 2>/dev/null || cp -a "$w" "$WORK_DIR/ctx/pyapp-v$n/wheels"
        rm -f "$WORK_DIR/ctx/pyapp-v$n/wheels/.done"
        bench_build "bench/pyapp:v$n" "$WORK_DIR/ctx/pyapp-v$n" "pyapp-v$n"
    done
}

bench_build_node_group() {
    local n m c
    recipe_nodebase "$WORK_DIR/ctx/nodebase"
    bench_build bench/nodebase:1 "$WORK_DIR/ctx/nodebase" nodebase
    for n in 1 2 3 4 5; do
        m="$(npm_modules "$n")" || exit 2
        c="$WORK_DIR/ctx/nodeapp-v$n"
        recipe_nodeapp "$c" "$n"
        cp -a "$m/package.json" "$m/package-lock.json" "$c/"
        cp -al "$m/node_modules" "$c/node_modules" 2>/dev/null || cp -a "$m/node_modules" "$c/node_modules"
        bench_build "bench/nodeapp:v$n" "$c" "nodeapp-v$n"
    done
}

# group_key GROUP: cache key of a group: its recipes and, for the bases, the
# debootstrap tarballs (b1..b3 are the parents of every group).
group_key() {
    local n
    {
        for n in 1 2 3; do cat "${BENCH_ROOTFS[$n]}.sha256"; done
        declare -f bench_build bench_build_debian_group recipe_nginx
        case "$1" in
            py) declare -f bench_build_py_group recipe_pybase recipe_pyapp py_requirements app_sources ;;
            node) declare -f bench_build_node_group recipe_nodebase recipe_nodeapp npm_bumps app_sources ;;
        esac
    } | sha256sum | cut -c1-16
}

# ensure_bench_corpus: load every group's archive into the running dockerd,
# building (and saving) the groups that are not cached yet. BENCH_QUICK=1:
# only the Debian bases and nginx. Sets BENCH_IMAGES (push order).
ensure_bench_corpus() {
    local groups=(debian py node) g key tar imgs t0 tmp
    [[ "${BENCH_QUICK:-}" == 1 ]] && groups=(debian)
    BENCH_IMAGES=()
    mkdir -p "$BENCH_CACHE/images"
    bench_rootfs 1
    bench_rootfs 2
    bench_rootfs 3
    for g in "${groups[@]}"; do
        case "$g" in
            debian) imgs=("${BENCH_GROUP_DEBIAN[@]}") ;;
            py) imgs=("${BENCH_GROUP_PY[@]}") ;;
            node) imgs=("${BENCH_GROUP_NODE[@]}") ;;
        esac
        BENCH_IMAGES+=("${imgs[@]}")
        key="$(group_key "$g")"
        tar="$BENCH_CACHE/images/$g-$key.tar"
        t0="$(now)"
        if [[ -s "$tar" ]]; then
            docker load -i "$tar" >>"$LOG_DIR/docker-load.log" 2>&1 \
                || { show_log "$LOG_DIR/docker-load.log"; die "docker load $tar failed"; }
            log "corpus group $g loaded from cache in $(elapsed "$t0") s"
            continue
        fi
        log "building corpus group $g (cached afterwards in $tar)"
        # Later groups build on the Debian bases.
        [[ "$g" != debian ]] && ! docker image inspect bench/debian:b1 >/dev/null 2>&1 \
            && bench_build_debian_group
        "bench_build_${g}_group"
        rm -f "$BENCH_CACHE/images/$g"-*.tar
        tmp="$(mktemp "$BENCH_CACHE/images/.tmp.XXXXXX")"
        docker save -o "$tmp" "${imgs[@]}" || die "docker save of group $g failed"
        mv "$tmp" "$tar"
        log "corpus group $g built in $(elapsed "$t0") s"
    done
    BENCH_CORPUS_TARS=()
    for g in "${groups[@]}"; do BENCH_CORPUS_TARS+=("$BENCH_CACHE/images/$g-$(group_key "$g").tar"); done
}

# reload_bench_corpus: docker load the cached archives again.
reload_bench_corpus() {
    local t
    for t in "${BENCH_CORPUS_TARS[@]}"; do
        docker load -i "$t" >>"$LOG_DIR/docker-load.log" 2>&1 || return 1
    done
}

# ensure_oci_layouts: each corpus image as an OCI layout with uncompressed
# layers (skopeo copy docker-daemon: -> oci:), one layout per image, cached
# next to the archives and keyed by the image ID. Sets OCI_DIR[IMG].
declare -A OCI_DIR
ensure_oci_layouts() {
    local img id d tmp
    for img in "${BENCH_IMAGES[@]}"; do
        id="$(docker image inspect -f '{{.Id}}' "$img")" || die "no image $img"
        d="$BENCH_CACHE/oci/${id#sha256:}"
        if [[ ! -f "$d/index.json" ]]; then
            log "exporting $img as an OCI layout"
            mkdir -p "$BENCH_CACHE/oci"
            tmp="$(mktemp -d "$BENCH_CACHE/oci/.tmp.XXXXXX")"
            skopeo copy --quiet --src-daemon-host "$DOCKER_HOST" --dest-oci-accept-uncompressed-layers \
                "docker-daemon:$img" "oci:$tmp:img" >>"$LOG_DIR/skopeo-export.log" 2>&1 \
                || { show_log "$LOG_DIR/skopeo-export.log"; die "skopeo export of $img failed"; }
            rm -rf "$d"
            mv "$tmp" "$d"
        fi
        OCI_DIR["$img"]="$d"
    done
}
