#!/usr/bin/env bash
# Export the bladder cancer microarrays of Debian's r-bioc-bladderbatch (22,283 probes x 57 samples,
# RMA log2 intensities) as the genes x samples TSV stage 00 reads: header "gene_id" + sample names,
# one probe per line. Needs: apt-get install -y r-bioc-bladderbatch (pulls in R).
#   bash bench/data/export_bladderbatch.sh [OUT]      # default: bladderbatch.tsv in bench/work (git-ignored)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
work_dir="$repo/bench/work"
out="${1:-$work_dir/bladderbatch.tsv}"
command -v Rscript >/dev/null || { echo "export_bladderbatch: Rscript not found (apt-get install -y r-bioc-bladderbatch)" >&2; exit 2; }
mkdir -p "$(dirname "$out")"
tmp="$out.tmp-$$"
trap 'rm -f "$tmp"' EXIT
Rscript --vanilla -e '
suppressPackageStartupMessages(library(bladderbatch))
data(bladderdata)
x <- Biobase::exprs(bladderEset)
out <- commandArgs(trailingOnly = TRUE)[1]
con <- file(out, "w")
writeLines(paste(c("gene_id", colnames(x)), collapse = "\t"), con)
write.table(format(x, digits = 7, trim = TRUE), con, sep = "\t", quote = FALSE, col.names = FALSE, row.names = TRUE)
close(con)
cat(sprintf("%d probes x %d samples\n", nrow(x), ncol(x)), file = stderr())
' "$tmp"
mv "$tmp" "$out"
trap - EXIT
echo "$out"
