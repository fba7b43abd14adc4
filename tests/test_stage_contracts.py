"""One declaration per stage: the stage CLIs, the driver and the docs take parameters and
defaults from the contracts, and nothing else declares them."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from dcoex.pipeline.options import USAGE, driver_params, parse_args
from dcoex.stages import STAGE_PACKAGES, stage_contract
from dcoex.stages.__main__ import parameter_tables

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.parametrize("stage", list(STAGE_PACKAGES))
def test_stage_cli_options_are_the_contracts(stage):
    contract = stage_contract(stage)
    command = importlib.import_module(f"{contract.module}.cli").main
    options = {p.name: p for p in command.params}
    for param in contract.params:
        assert param.name in options, f"{stage}: {param.flag} missing from the CLI"
        option = options[param.name]
        assert param.flag in option.opts
        assert option.default == param.default, f"{stage} {param.flag}: CLI default differs from the contract"


def test_driver_offers_every_driver_parameter_with_the_contract_default(tmp_path):
    tsv = tmp_path / "e.tsv"
    tsv.write_text("gene\ts1\ts2\ng1\t1\t2\n")
    options = parse_args(["--expr-tsv", str(tsv), "--out-dir", str(tmp_path / "o")], "slurm")
    params = driver_params()
    assert {p.name for p in params} >= {"low_frac", "high_frac", "n_bootstrap", "bootstrap_frac", "seed",
                                        "fdr_alpha", "edge_selection", "ci_alpha", "min_effect",
                                        "corr_threshold", "no_ci_filter", "batch_size"}
    for p in params:
        assert p.flag in USAGE
        assert options.params[p.name] == p.default
        assert getattr(options, p.name) == p.default


def test_shared_parameters_are_one_declaration():
    seen = {}
    for stage in STAGE_PACKAGES:
        for p in stage_contract(stage).params:
            if p.driver and p.name in seen:
                assert seen[p.name] is p, f"{p.name} declared twice"
            seen.setdefault(p.name, p)


def test_parameter_docs_are_generated_from_the_contracts():
    assert (DOCS / "parameters.md").read_text() == parameter_tables(), \
        "docs/parameters.md is stale: python -m dcoex.stages > docs/parameters.md"


@pytest.mark.parametrize(("flag", "value", "words"), [
    ("--fdr-alpha", "0", ["--fdr-alpha 0", "(0, 1]"]),
    ("--ci-alpha", "1", ["--ci-alpha 1", "(0, 1)"]),
    ("--edge-selection", "all", ["--edge-selection 'all'", "sig_differential"]),
    ("--min-effect", "-0.1", ["--min-effect -0.1", "[0, inf]"]),
    ("--n-bootstrap", "0", ["--n-bootstrap 0", ">= 1"]),
    ("--seed", "x", ["--seed 'x'", "whole number"]),
])
def test_bad_values_are_one_line_from_the_contract(tmp_path, flag, value, words):
    from hpc.errors import InputError

    tsv = tmp_path / "e.tsv"
    tsv.write_text("gene\ts1\ts2\ng1\t1\t2\n")
    with pytest.raises(InputError) as info:
        parse_args(["--expr-tsv", str(tsv), "--out-dir", str(tmp_path / "o"), flag, value], "slurm")
    for word in words:
        assert word in str(info.value)


def test_added_parameter_enters_provenance_only_when_set():
    """A content parameter added later (Param.added) is not recorded at its default, so the
    provenance, digest included, of an output written before it existed is still wanted; set to
    another value it is recorded and the output differs."""
    from dcoex.provenance import Provenance
    from dcoex.stages.s02b_bootstrap_edges.contract import CONTRACT

    default = CONTRACT.content_params({})
    assert "boot_precision" not in default and "ci_alpha" in default
    before = Provenance(stage="02b", format=CONTRACT.format, format_version=CONTRACT.format_version,
                        params=dict(default), inputs={"expression": "e"})
    wanted = Provenance(stage="02b", format=CONTRACT.format, format_version=CONTRACT.format_version,
                        params=CONTRACT.content_params({"boot_precision": "float32"}), inputs={"expression": "e"})
    assert before.differences(wanted) == [] and before.digest == wanted.digest
    compact = Provenance(stage="02b", format=CONTRACT.format, format_version=CONTRACT.format_version,
                         params=CONTRACT.content_params({"boot_precision": "compact"}), inputs={"expression": "e"})
    assert before.differences(compact) == ["boot_precision (unset) → compact"]
    assert before.digest != compact.digest
