"""``python -m dcoex.stages``: print the parameter tables of every stage (docs/parameters.md)."""

from __future__ import annotations

from dcoex.stages import STAGE_PACKAGES, stage_contract


def parameter_tables() -> str:
    """Markdown: one table per stage, from its contract (flag, default, provenance, driver, help)."""
    lines = ["# Stage parameters", "",
             "Generated from the stage contracts (`python -m dcoex.stages > docs/parameters.md`; a test",
             "checks this page is current). *content*: the parameter changes the output and enters its",
             "provenance (design.md §7); *driver*: `run_bootstrap_pipeline.sh` offers it and passes it on.", ""]
    for stage in STAGE_PACKAGES:
        c = stage_contract(stage)
        lines += [f"## {stage} — {c.title} (`python -m {c.module}`)", "",
                  f"Output `{c.output}`{' (one file per reference gene)' if c.per_gene else ''}, format "
                  f"`{c.format}` version {c.format_version}; reads {', '.join(c.upstream) or 'the input TSV'}.", ""]
        if not c.params:
            lines += ["No parameters besides its paths.", ""]
            continue
        lines += ["| flag | default | content | driver | meaning |", "|---|---|---|---|---|"]
        for p in c.params:
            default = "off" if p.switch else ("—" if p.default is None else f"`{p.default}`")
            flag = p.flag if p.switch else f"{p.flag} {p.metavar}"
            meaning = p.help.replace("|", "\\|")
            lines.append(f"| `{flag}` | {default} | {'yes' if p.content else 'no'} | "
                         f"{'yes' if p.driver else 'no'} | {meaning} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(parameter_tables(), end="")
