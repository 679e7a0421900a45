"""Every stage's typed configuration, in one import.

Each dataclass lives beside the code of its stage (defaults are defined there once); this
module only gathers them so a user can see the whole pipeline's settings in one place.
"""

from fm4npp.downstream.config import ClassifierConfig, FinetuneConfig, TrackingAdapterConfig
from fm4npp.model.config import ModelConfig
from fm4npp.pretrain.config import PretrainConfig
from fm4npp.serialize.config import PipelineConfig, SerializeConfig
from fm4npp.sim.config import DigitizeConfig, GeneratorConfig, SimConfig, TransportConfig

__all__ = [
    "SimConfig", "GeneratorConfig", "TransportConfig", "DigitizeConfig",
    "SerializeConfig", "PipelineConfig",
    "ModelConfig",
    "PretrainConfig",
    "FinetuneConfig", "TrackingAdapterConfig", "ClassifierConfig",
]
