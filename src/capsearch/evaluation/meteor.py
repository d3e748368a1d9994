"""METEOR 1.5 the COCO way: the jar pycocoevalcap ships, run as its ``Meteor`` wrapper runs it (``-l en -norm``,
one ``SCORE`` line per candidate, then one ``EVAL`` line over all their statistics), on PTB-tokenized text.

The jar needs Java (the project installs Java 17) and loads its paraphrase table on start, about 6 seconds; so a
result is kept in the result cache under a key of the jar and the exact inputs, and a repeated evaluation of the
same captions never starts Java. The corpus score is the jar's score of the candidates' statistics summed (tested:
equal to its ``EVAL`` over all of them), so the bootstrap interval of the corpus score sums each resample's
statistics and lets the same jar score the sum: every resample is scored exactly as the corpus is.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pycocoevalcap.meteor.meteor

from capsearch.cache import ResultCache, namespace

JAR = Path(pycocoevalcap.meteor.meteor.__file__).parent / "meteor-1.5.jar"
COMMAND = ["java", "-jar", "-Xmx2G", JAR.name, "-", "-", "-stdio", "-l", "en", "-norm"]  # pycocoevalcap's


@dataclass(frozen=True)
class MeteorResult:
    """Corpus METEOR (as COCO reports it, 0-1), each candidate's, and a 95% bootstrap interval of the corpus score."""

    corpus: float
    items: list[float]
    low: float
    high: float


class MeteorJar:
    """The METEOR 1.5 jar running in ``-stdio`` mode; use as a context manager."""

    def __init__(self) -> None:
        if shutil.which("java") is None:
            raise OSError("METEOR needs Java on the PATH (apt install openjdk-17-jre-headless; `make venv` does)")
        self.process = subprocess.Popen(
            COMMAND, cwd=JAR.parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )

    def __enter__(self) -> MeteorJar:
        return self

    def __exit__(self, *_: object) -> None:
        self.process.stdin.close()
        self.process.kill()
        self.process.wait()

    def _ask(self, line: str, answers: int) -> list[str]:
        self.process.stdin.write(f"{line}\n".encode())
        self.process.stdin.flush()
        lines = [self.process.stdout.readline().decode().strip() for _ in range(answers)]
        if any(not line for line in lines):
            raise OSError(f"the METEOR jar ({JAR}) stopped answering (exit code {self.process.poll()})")
        return lines

    def statistics(self, candidate: str, references: Sequence[str]) -> str:
        """The jar's statistics line of one tokenized candidate against its tokenized references."""
        candidate = candidate.replace("|||", "").replace("  ", " ")  # as pycocoevalcap cleans it
        return self._ask(" ||| ".join(("SCORE", " ||| ".join(references), candidate)), 1)[0]

    def aggregate(self, statistics: Sequence[str]) -> tuple[list[float], float]:
        """Each candidate's METEOR and the corpus METEOR of these statistics lines."""
        answers = self._ask("EVAL ||| " + " ||| ".join(statistics), len(statistics) + 1)
        return [float(a) for a in answers[:-1]], float(answers[-1])


def meteor(
    candidates: Sequence[str],
    references: Sequence[Sequence[str]],
    cache: ResultCache | None = None,
    resamples: int = 1000,
    seed: int = 0,
    jar: MeteorJar | None = None,
) -> MeteorResult:
    """METEOR of PTB-tokenized ``candidates`` against their tokenized ``references`` (lists, same order), with the
    bootstrap interval; from ``cache`` where these exact inputs were scored before. ``jar``: one already running
    (else one is started and stopped here)."""
    space = namespace(task="meteor", jar=_jar_digest(), resamples=resamples, seed=seed)
    key = hashlib.sha256(json.dumps([list(candidates), [list(r) for r in references]]).encode()).hexdigest()
    if cache is not None and (found := cache.get_many(space, [key])):
        return MeteorResult(**json.loads(found[key]))
    with contextlib.nullcontext(jar) if jar is not None else MeteorJar() as running:
        statistics = [running.statistics(c, r) for c, r in zip(candidates, references, strict=True)]
        items, corpus = running.aggregate(statistics)
        scores = [running.aggregate([line])[1] for line in resampled_sums(statistics, resamples, seed)]
    low, high = np.percentile(scores, [2.5, 97.5]) if scores else (corpus, corpus)  # no resamples: no interval
    result = MeteorResult(corpus, items, float(low), float(high))
    if cache is not None:
        cache.put_many(space, {key: json.dumps(asdict(result)).encode()})
    return result


def resampled_sums(statistics: Sequence[str], resamples: int, seed: int) -> list[str]:
    """The summed statistics of ``resamples`` bootstrap resamples (drawn with replacement, seeded), as lines."""
    table = np.array([[float(value) for value in line.split()] for line in statistics])
    n = len(table)
    draws = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    counts = np.zeros((resamples, n))
    np.add.at(counts, (np.arange(resamples)[:, None], draws), 1)
    return [" ".join(repr(float(v)) for v in row) for row in counts @ table]


@functools.cache
def _jar_digest() -> str:
    return hashlib.sha256(JAR.read_bytes()).hexdigest()[:16]
