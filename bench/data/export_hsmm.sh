#!/usr/bin/env bash
# Export Debian's r-bioc-hsmmsinglecell (Trapnell et al. 2014: 271 human skeletal muscle myoblasts,
# Smart-seq full-length RNA-seq, FPKM, captured at 0, 24, 48 and 72 h of differentiation) for
# bench/label_transfer.py's hsmm splits. FPKM carry no counts; each cell's FPKM are rescaled to its
# mapped fragments (x / sum(x) * Mapped.Fragments, rounded) as count-like values, and genes seen
# (>= 1) in fewer than 10 cells are dropped. Writes, into OUT_DIR (default bench/work, git-ignored):
#   hsmm_counts.tsv.gz   genes x cells, header "gene_id" + cell names
#   hsmm_cells.tsv       cell, hours
# Needs: apt-get install -y r-bioc-hsmmsinglecell (pulls in R).
#   bash bench/data/export_hsmm.sh [OUT_DIR]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out_dir="${1:-$repo/bench/work}"
command -v Rscript >/dev/null || { echo "export_hsmm: Rscript not found (apt-get install -y r-bioc-hsmmsinglecell)" >&2; exit 2; }
mkdir -p "$out_dir"
tmp="$out_dir/.hsmm-$$"
mkdir "$tmp"
trap 'rm -rf "$tmp"' EXIT
Rscript --vanilla -e '
suppressPackageStartupMessages(library(HSMMSingleCell))
data(HSMM_expr_matrix); data(HSMM_sample_sheet)
x <- as.matrix(HSMM_expr_matrix)
sheet <- HSMM_sample_sheet[colnames(x), ]
counts <- round(sweep(x, 2, colSums(x), "/") * rep(sheet$Mapped.Fragments, each = nrow(x)))
counts <- counts[rowSums(counts >= 1) >= 10, ]
dir <- commandArgs(trailingOnly = TRUE)[1]
con <- gzfile(file.path(dir, "hsmm_counts.tsv.gz"), "w")
writeLines(paste(c("gene_id", colnames(counts)), collapse = "\t"), con)
write.table(counts, con, sep = "\t", quote = FALSE, col.names = FALSE, row.names = TRUE)
close(con)
write.table(data.frame(cell = colnames(counts), hours = sheet$Hours), file.path(dir, "hsmm_cells.tsv"),
            sep = "\t", quote = FALSE, row.names = FALSE)
cat(sprintf("%d genes x %d cells\n", nrow(counts), ncol(counts)), file = stderr())
' "$tmp"
mv "$tmp/hsmm_counts.tsv.gz" "$tmp/hsmm_cells.tsv" "$out_dir/"
echo "$out_dir/hsmm_counts.tsv.gz"
