"""How a model is priced as deployed: the `pricing:` section of a task (business.pricing, or a
`models:` entry's). A schema only; every formula that uses it is in tunewise.cost.model."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Pricing(BaseModel):
    """Prices used for every cost figure. Defaults are OpenAI gpt-4o-mini list prices (USD, 2024):
    set yours. Give hosted API prices, or a GPU hourly price for self-hosting, or both."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # as every task section

    input_per_1m: float | None = Field(0.15, ge=0, description="$ per 1M prompt tokens, base model")
    output_per_1m: float | None = Field(0.60, ge=0, description="$ per 1M output tokens, base model")
    finetuned_input_per_1m: float | None = Field(0.30, ge=0, description="$ per 1M prompt tokens, fine-tuned model")
    finetuned_output_per_1m: float | None = Field(1.20, ge=0, description="$ per 1M output tokens, fine-tuned model")
    training_per_1m: float | None = Field(3.00, ge=0, description="hosted fine-tuning $ per 1M training tokens")
    gpu_hourly: float | None = Field(None, ge=0, description="self-hosting: $ per GPU hour")
    gpu_inference_tokens_per_s: float | Literal["measured"] = Field(
        2500.0, description="self-hosting: tokens/s one GPU serves; `measured`: the rate this run measured for each candidate on this machine"
    )
    gpu_training_tokens_per_s: float = Field(5000.0, gt=0, description="self-hosting: tokens/s one GPU trains")

    @model_validator(mode="after")
    def _some_price(self) -> "Pricing":
        hosted = self.input_per_1m is not None and self.output_per_1m is not None
        if not hosted and self.gpu_hourly is None:
            raise ValueError("give input_per_1m and output_per_1m (hosted API) or gpu_hourly (self-hosting)")
        tps = self.gpu_inference_tokens_per_s
        if tps != "measured" and (isinstance(tps, str) or not tps > 0):
            raise ValueError(f"gpu_inference_tokens_per_s: give a number > 0 or `measured` (got {str(tps)[:40]!r})")
        if tps == "measured" and not self.self_hosted:
            raise ValueError("gpu_inference_tokens_per_s: `measured` prices self-hosting: set gpu_hourly and "
                             "input_per_1m: null, output_per_1m: null")
        return self

    @property
    def measured_throughput(self) -> bool:
        return self.gpu_inference_tokens_per_s == "measured"

    def with_throughput(self, tokens_per_s: float | None) -> "Pricing":
        """These prices with a `measured` throughput replaced by the rate measured (unchanged otherwise;
        with nothing measured, the default rate)."""
        if not self.measured_throughput:
            return self
        rate = tokens_per_s if tokens_per_s and tokens_per_s > 0 else Pricing.model_fields["gpu_inference_tokens_per_s"].default
        return self.model_copy(update={"gpu_inference_tokens_per_s": rate})

    @property
    def self_hosted(self) -> bool:
        return self.gpu_hourly is not None and (self.input_per_1m is None or self.output_per_1m is None)
