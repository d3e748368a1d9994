"""METEOR 1.5 the COCO way: the jar pycocoevalcap ships, run as its ``Meteor`` wrapper runs it (``-l en -norm``,
one ``SCORE`` line per candidate, then one ``EVAL`` line over all their statistics), on PTB-tokenized text.

The jar needs Java (the project installs Java 17) and loads its paraphrase table on start, about 6 seconds; so a
result is kept in the result cache under a key of the jar and the exact inputs, and a repeated evaluation of the
same captions never starts Java. The corpus score is the jar's score of the candidates' statistics summed as the jar
sums them (the chunk count of a candidate matching its reference whole is left out; tested: equal to its ``EVAL``
over all of them, with such candidates among them), so the bootstrap interval of the corpus score sums each resample's
statistics and lets the same jar score the sums: every resample is scored exactly as the corpus is. All the
resamples' sums go to the jar as one ``EVAL`` line, whose per-line answers are each sum's score (tested: equal to
scoring each sum alone): one round trip instead of one per resample (1,000 took about 4 seconds).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import shutil
import subprocess
import threading
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
    """The METEOR 1.5 jar running in ``-stdio`` mode, started on its first question (so that one jar can serve
    several scorings of which all may come from the result cache); use as a context manager."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def process(self) -> subprocess.Popen[bytes]:
        """The running jar (started here on first use)."""
        if self._process is None:
            if shutil.which("java") is None:
                raise OSError("METEOR needs Java on the PATH (apt install openjdk-17-jre-headless; `make venv` does)")
            self._process = subprocess.Popen(
                COMMAND, cwd=JAR.parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
            )
        return self._process

    def __enter__(self) -> MeteorJar:
        return self

    def __exit__(self, *_: object) -> None:
        if self._process is not None:
            self._process.stdin.close()
            self._process.kill()
            self._process.wait()

    def _ask(self, lines: Sequence[str], answers: int) -> list[str]:
        """Send ``lines`` and read ``answers`` lines back. A thread writes while the answers are read, so the jar
        works through many questions without waiting on a round trip for each (and no pipe fills up)."""
        process = self.process

        def write() -> None:
            with contextlib.suppress(BrokenPipeError):  # the jar died: the reading below says so
                process.stdin.write("".join(f"{line}\n" for line in lines).encode())
                process.stdin.flush()

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        answered = [process.stdout.readline().decode().strip() for _ in range(answers)]
        writer.join()
        if any(not line for line in answered):
            raise OSError(f"the METEOR jar ({JAR}) stopped answering (exit code {process.poll()})")
        return answered

    def statistics_of(self, candidates: Sequence[str], references: Sequence[Sequence[str]]) -> list[str]:
        """The statistics line of each tokenized candidate against its tokenized references, in one stream."""
        lines = [
            " ||| ".join(("SCORE", " ||| ".join(refs), candidate.replace("|||", "").replace("  ", " ")))
            for candidate, refs in zip(candidates, references, strict=True)
        ]  # the candidate cleaned as pycocoevalcap cleans it
        return self._ask(lines, len(lines))

    def aggregate(self, statistics: Sequence[str]) -> tuple[list[float], float]:
        """Each candidate's METEOR and the corpus METEOR of these statistics lines."""
        answers = self._ask(["EVAL ||| " + " ||| ".join(statistics)], len(statistics) + 1)
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
        statistics = running.statistics_of(candidates, references)
        items, corpus = running.aggregate(statistics)
        scores = running.aggregate(resampled_sums(statistics, resamples, seed))[0] if resamples else []
    low, high = np.percentile(scores, [2.5, 97.5]) if scores else (corpus, corpus)  # no resamples: no interval
    result = MeteorResult(corpus, items, float(low), float(high))
    if cache is not None:
        cache.put_many(space, {key: json.dumps(asdict(result)).encode()})
    return result


MODULES = 4  # the jar's stage columns: (test content, reference content, test function, reference function) each
CHUNKS = 4 + 4 * MODULES  # the column after the lengths, function-word counts and the stages' matches


def summable(table: np.ndarray) -> np.ndarray:
    """Statistics rows as the jar adds them up (``MeteorStats.addStats``): the chunk count of a candidate that
    matches its reference whole (every word of both matched, in one chunk) is not added, so a row's chunks are
    zeroed there before rows are summed."""
    test_matches = table[:, 4:CHUNKS:4].sum(axis=1) + table[:, 6:CHUNKS:4].sum(axis=1)
    reference_matches = table[:, 5:CHUNKS:4].sum(axis=1) + table[:, 7:CHUNKS:4].sum(axis=1)
    whole = (test_matches == table[:, 0]) & (reference_matches == table[:, 1]) & (table[:, CHUNKS] == 1)
    summed = table.copy()
    summed[whole, CHUNKS] = 0
    return summed


def resampled_sums(statistics: Sequence[str], resamples: int, seed: int) -> list[str]:
    """The summed statistics of ``resamples`` bootstrap resamples (drawn with replacement, seeded), as lines, each
    summed as the jar sums a corpus (:func:`summable`)."""
    table = summable(np.array([[float(value) for value in line.split()] for line in statistics]))
    n = len(table)
    draws = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    counts = np.zeros((resamples, n))
    np.add.at(counts, (np.arange(resamples)[:, None], draws), 1)
    return [" ".join(repr(float(v)) for v in row) for row in counts @ table]


@functools.cache
def _jar_digest() -> str:
    return hashlib.sha256(JAR.read_bytes()).hexdigest()[:16]
