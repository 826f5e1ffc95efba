"""Per-request pooling parameters (vLLM's PoolingParams) and the model's pooler settings
(vLLM's PoolerConfig): what an embedding request asks, and how the model turns hidden states
into one vector."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pagoda.engine.sampling_params import ParamError

PoolingType = Literal["LAST", "MEAN"]


@dataclass
class PoolingParams:
    dimensions: int | None = None  # Matryoshka models: keep the first `dimensions` values
    normalize: bool | None = None  # None: as the model's pooler config says
    # Set by the engine from its PoolerConfig when the request is added (not vLLM's field).
    pooling_type: PoolingType | None = None

    def __post_init__(self) -> None:
        if self.dimensions is not None and self.dimensions < 1:
            raise ParamError("dimensions", f"dimensions must be at least 1, got {self.dimensions}")


@dataclass(frozen=True)
class PoolerConfig:
    """vLLM's defaults for an embedding model made from a decoder: the last token, normalized."""

    pooling_type: PoolingType = "LAST"
    normalize: bool = True
    # Matryoshka models (config.json's is_matryoshka / matryoshka_dimensions) may be truncated.
    is_matryoshka: bool = False
    matryoshka_dimensions: tuple[int, ...] | None = None

    def resolve(self, params: PoolingParams) -> PoolingParams:
        """The request's parameters completed from the model's settings; ParamError where the
        model cannot give what is asked (vLLM's messages)."""
        if params.dimensions is not None:
            if not self.is_matryoshka:
                raise ParamError(
                    "dimensions",
                    "Model does not support matryoshka representation, changing output "
                    "dimensions will lead to poor results.",
                )
            if self.matryoshka_dimensions and params.dimensions not in self.matryoshka_dimensions:
                raise ParamError(
                    "dimensions",
                    f"Model only supports {list(self.matryoshka_dimensions)} for matryoshka "
                    f"representation, got {params.dimensions}",
                )
        normalize = self.normalize if params.normalize is None else params.normalize
        return PoolingParams(params.dimensions, normalize, self.pooling_type)
