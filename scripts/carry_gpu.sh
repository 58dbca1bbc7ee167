#!/usr/bin/env bash
# Fill carry/ with what the GPU machine lacks, before the tree is sent there (docs/gpu.md):
#   carry/cifar10-jpeg.tar.gz   CIFAR-10 re-encoded as JPEG (19.6 MB; scripts/gpu_run.py step 5 builds
#                               cifar-10-batches-py from it there, with the machine's own PIL)
#   carry/GIT_COMMIT            this checkout's commit (-dirty when tracked files changed): the tree
#                               arrives without .git, and gpu_run.py passes it to the harness's sidecar
#   carry/SHA256SUMS            checksums of the two
# carry/ is ignored by git and travels only when named: the device tool's `carry: ["carry"]`.
#
#   scripts/carry_gpu.sh [CIFAR_TARBALL]   # default ../shared/data/cifar10-jpeg.tar.gz, then /work/shared/data/
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

src="${1:-}"
if [ -z "$src" ]; then
    for candidate in ../shared/data/cifar10-jpeg.tar.gz /work/shared/data/cifar10-jpeg.tar.gz; do
        if [ -f "$candidate" ]; then src="$candidate"; break; fi
    done
fi
if [ -z "$src" ] || [ ! -f "$src" ]; then
    echo "carry_gpu.sh: no CIFAR-10 tarball (looked for ${src:-../shared/data/cifar10-jpeg.tar.gz}); pass its path" >&2
    exit 2
fi
if [ -L carry ]; then
    echo "carry_gpu.sh: carry is a symbolic link; remove it (the folder must travel with the tree)" >&2
    exit 2
fi
mkdir -p carry
# A copy, not a link: a link travels as a link and its target stays behind.
cp --remove-destination "$src" carry/cifar10-jpeg.tar.gz

commit="$(git rev-parse HEAD 2>/dev/null || true)"
if [ -n "$commit" ]; then
    git diff --quiet HEAD -- 2>/dev/null || commit="$commit-dirty"
    printf '%s\n' "$commit" > carry/GIT_COMMIT
else
    echo "carry_gpu.sh: not a git checkout; carry/GIT_COMMIT not written (set BENCH_GIT_COMMIT there)" >&2
    rm -f carry/GIT_COMMIT
fi
(cd carry && sha256sum cifar10-jpeg.tar.gz ${commit:+GIT_COMMIT} > SHA256SUMS)
echo "carry/: $(du -sh carry | cut -f1) (commit ${commit:-unknown})"
