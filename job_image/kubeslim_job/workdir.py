"""The layout of the work directory the three stages share (an emptyDir in the pod)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TypeVar

from kubeslim_api import reasons

from .handoff import Handoff

MODEL_FILE = "model.pdmodel"
PARAMS_FILE = "model.pdiparams"

H = TypeVar("H", bound=Handoff)


@dataclass(frozen=True)
class WorkDir:
    root: str

    def path(self, *parts: str, mkdir: bool = True) -> str:
        p = os.path.join(self.root, *parts)
        if mkdir:
            os.makedirs(os.path.dirname(p) if os.path.splitext(p)[1] else p, exist_ok=True)
        return p

    @property
    def fp32(self) -> str:            # exported static model: model.pdmodel + model.pdiparams
        return self.path("fp32")

    @property
    def src(self) -> str:             # fetched user code and weights
        return self.path("src")

    @property
    def calib(self) -> str:           # preprocessed calibration samples
        return self.path("data", "calibration")

    @property
    def eval(self) -> str:            # preprocessed evaluation samples, shared by all candidates
        return self.path("data", "evaluation")

    def int8(self, algo: str) -> str:  # one quantized candidate per algo
        return self.path("int8", algo)

    @property
    def report(self) -> str:
        return self.path("report")

    # What one stage hands to the next (handoff.py).
    def save(self, facts: Handoff) -> None:
        tmp = self.path(facts.FILE + ".tmp")
        with open(tmp, "w") as fh:
            json.dump(facts.dump(), fh, indent=1, sort_keys=True)
        os.replace(tmp, self.path(facts.FILE))

    def load(self, kind: type[H]) -> H:
        from .errors import JobError

        p = os.path.join(self.root, kind.FILE)
        if not os.path.exists(p):
            raise JobError(reasons.STAGE_ORDER, f"{p} is missing: run the {kind.PRODUCED_BY} stage first with the same "
                                                "--work-dir", exit_code=1)
        with open(p) as fh:
            return kind.model_validate(json.load(fh))
