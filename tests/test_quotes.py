"""The READMEs quote the study's generated findings: every quoted piece must be in the report `report` wrote.

A findings sentence is generated from its test and never rewritten; this catches a README that kept an
old sentence after the report was regenerated (or edited a number by hand)."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STUDY = ROOT / "results" / "studies" / "cpu-cardinality"


def quoted_blocks(text: str):
    """Each run of '> ' lines, joined into one string."""
    blocks, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith(">"):
            current.append(line[1:].strip())
        elif current:
            blocks.append(" ".join(part for part in current if part))
            current = []
    return blocks


def pieces(block: str):
    """The parts of a quote between '[...]' elisions, each long enough to mean something."""
    return [p.strip(" ;,.") for p in re.split(r"\[\.\.\.\]", block) if len(p.strip(" ;,.")) > 20]


def findings_of(report: Path) -> str:
    text = report.read_text()
    return " ".join(line.lstrip("- ").strip() for line in text.splitlines())


REPORTS = (STUDY / "report" / "report.md", STUDY / "first-run" / "report" / "report.md")


def test_every_quote_in_the_study_readme_is_in_its_generated_report():
    report = " ".join(findings_of(path) for path in REPORTS)  # the 4-seed retrain's and the first run's
    readme = (STUDY / "README.md").read_text()
    quotes = [b for b in quoted_blocks(readme) if not b.startswith("The 3x3 convolution alone")]
    assert quotes, "the study README quotes no findings"
    for block in quotes:
        for sentence in re.split(r"(?<=\.) - ", block.lstrip("- ")):
            for piece in pieces(sentence):
                assert piece in report, f"README quote not in report.md: {piece[:120]}"


def test_the_grouped_convolution_quote_is_the_sentence_of_the_committed_csv():
    text = (STUDY / "grouped_conv.txt").read_text().strip().splitlines()[-1]
    readme = (STUDY / "README.md").read_text()
    (quote,) = [b for b in quoted_blocks(readme) if b.startswith("The 3x3 convolution alone")]
    assert quote == text


def test_the_readme_headline_quotes_pieces_of_the_study_report():
    report = " ".join(findings_of(path) for path in REPORTS)
    readme = (ROOT / "README.md").read_text()
    headline = readme.split("## The headline finding", 1)[1].split("\n## ", 1)[0]
    blocks = quoted_blocks(headline)
    assert blocks
    for block in blocks:
        for piece in pieces(block):
            assert piece in report, f"README headline quote not in report.md: {piece[:120]}"
