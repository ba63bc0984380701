"""The one pydantic base of kubeslim's typed documents (the spec, the result contract, the progress
line, the job's work-dir hand-offs): snake_case in Python, camelCase on the wire as Kubernetes
spells its fields, either name accepted when building one. Each family of documents subclasses it
with its own `extra`/`frozen` policy, because that policy is a property of who writes the document."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    def dump(self, **kwargs: Any) -> dict[str, Any]:
        """The wire form: camelCase keys, unset optional fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, **kwargs)
