"""Parameters shared by several stages, declared once (defaults, validation, help)."""

from __future__ import annotations

from collections.abc import Callable

from dcoex.cli import parse_batch_size
from dcoex.stages.contract import Param
from dcoex.stages.s03_network.focus import METRIC_NAMES
from hpc.device import DEVICES
from hpc.errors import InputError


def number(flag: str, *, low: float | None = None, high: float | None = None, low_open: bool = False,
           high_open: bool = False) -> Callable[[str], float]:
    """A parser of a real number in [low, high] (open ends as asked), one-line errors."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise InputError(f"{flag} {text!r}: expected a number") from None
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high or value != value:
            left = "(" if low_open else "["
            right = ")" if high_open else "]"
            span = f"{left}{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}{right}"
            raise InputError(f"{flag} {text}: must be in {span}")
        return value

    return parse


def whole(flag: str, *, low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """A parser of a whole number in [low, high], one-line errors."""

    def parse(text: str) -> int:
        try:
            value = int(str(text).strip())
        except ValueError:
            raise InputError(f"{flag} {text!r}: expected a whole number") from None
        if low is not None and value < low:
            raise InputError(f"{flag} {value}: must be >= {low}" + (f" and <= {high}" if high is not None else ""))
        if high is not None and value > high:
            raise InputError(f"{flag} {value}: must be <= {high}" + (f" and >= {low}" if low is not None else ""))
        return value

    return parse


def choice(flag: str, options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in options:
            raise InputError(f"{flag} {text!r}: expected one of {', '.join(options)}")
        return text

    return parse


def _batch(text: str) -> int | str:
    return parse_batch_size(text)


LOW_FRAC = Param("low_frac", 0.2, "Fraction of samples in LOW, (0, 0.5].",
                 number("--low-frac", low=0, high=0.5, low_open=True))
HIGH_FRAC = Param("high_frac", 0.2, "Fraction of samples in HIGH, (0, 0.5].",
                  number("--high-frac", low=0, high=0.5, low_open=True))
N_BOOTSTRAP = Param("n_bootstrap", 1000, "Bootstrap replicates B.", whole("--n-bootstrap", low=1), metavar="N")
BOOTSTRAP_FRAC = Param("bootstrap_frac", 0.8, "Resample size as a fraction of each group, (0, 1].",
                       number("--bootstrap-frac", low=0, high=1, low_open=True))
SEED = Param("seed", 42, "Seed of the per-gene SeedSequence.", whole("--seed", low=0), metavar="N")
FDR_ALPHA = Param("fdr_alpha", 0.05, "BH false discovery rate; significant means q < alpha, (0, 1].",
                  number("--fdr-alpha", low=0, high=1, low_open=True))
EDGE_SELECTIONS = ("sig_differential", "sig_edges")
EDGE_SELECTION = Param("edge_selection", "sig_differential",
                       "Edges 02b bootstraps: sig_differential (all) or sig_edges (also significant in a group).",
                       choice("--edge-selection", EDGE_SELECTIONS), metavar="S")
CI_ALPHA = Param("ci_alpha", 0.05, "Bootstrap percentile CI level is 1 - ci_alpha.",
                 number("--ci-alpha", low=0, high=1, low_open=True, high_open=True))
MIN_EFFECT = Param("min_effect", 0.0, "Keep differential edges with |delta| >= this.",
                   number("--min-effect", low=0))
CORR_THRESHOLD = Param("corr_threshold", 1e-4, "tau: an edge is present in a group if significant and |r| >= tau.",
                       number("--corr-threshold", low=0))
NO_CI_FILTER = Param("no_ci_filter", False, "Keep edges whose bootstrap CI contains 0.", lambda t: t, switch=True)
N_PERMUTATIONS = Param("n_permutations", 1000, "Random LOW/HIGH splits of the permutation null (stages 07, 08).",
                        whole("--n-permutations", low=1), content=False, metavar="P")
PERMS_PER_TASK = Param("perms_per_task", 50, "Permutations per array task of stage 07 (names its part files).",
                       whole("--perms-per-task", low=1), content=False, metavar="N")
BATCH_SIZE = Param("batch_size", "auto",
                   "Batch of 01/02a/02b: N, 'all' or 'auto' (fits memory).",
                   _batch, content=False, metavar="N/auto")
#: The exact rank GEMMs' device (dcoex.backend.resolve; docs/gpu.md). Not content: every device
#: gives identical outputs. Default cpu: ``auto`` would import torch in every job and use a GPU
#: the scheduler did not allocate wherever one is visible. The driver offers it: with gpu it
#: asks the scheduler for a GPU for the stages that take it (02a, 02b, 07); it refuses auto.
DEVICE = Param("device", "cpu",
               "Device of the exact rank products (02a, 02b, 07): cpu (numpy), gpu (CUDA through torch; "
               "the driver requests a GPU per task; exit 2 without one) or auto (a stage run by hand: a GPU "
               "when torch sees one). Outputs are identical on every device.",
               choice("--device", DEVICES), content=False, metavar="D")


def _gene_names(text: str) -> str:
    """A comma-separated list of gene names, normalised: blanks dropped, duplicates removed
    (first kept), order kept; names are checked against the run's genes by the stages."""
    names = list(dict.fromkeys(n.strip() for n in str(text).split(",") if n.strip()))
    if not names:
        raise InputError(f"--focus-genes {text!r}: expected gene names separated by commas")
    return ",".join(names)


#: Columns of rewiring_hubs.tsv a hub ranking may use (the counts and metrics of stage 03).
HUB_METRICS = ("n_sig_edges_diff", *METRIC_NAMES)
FOCUS_GENES = Param("focus_genes", None,
                    "Focus genes of 04 and extra genes 05 exports, by name, comma-separated "
                    "(default: the top --n-hubs hubs).", _gene_names, metavar="G1,G2")
N_HUBS = Param("n_hubs", 10, "Top hubs (by --hub-metric) used as focus genes (04) and exported (05).",
               whole("--n-hubs", low=1), metavar="K")
HUB_METRIC = Param("hub_metric", "L2L1_deg",
                   "rewiring_hubs.tsv column that ranks the hubs, descending (L2L1_deg: the file's order).",
                   choice("--hub-metric", HUB_METRICS), metavar="NAME")
