"""Engine options: validation, and the compute dtype "auto" picks for the host."""

from __future__ import annotations

import argparse

import pytest
import torch

from radixgen.cli import add_engine_options, engine_config_from_args
from radixgen.runtime.config import EngineConfig, cpu_has_fast_bfloat16


def test_auto_dtype_is_bfloat16_only_where_the_cpu_multiplies_it_natively():
    expected = torch.bfloat16 if cpu_has_fast_bfloat16() else torch.float32
    assert EngineConfig().dtype == "auto"
    assert EngineConfig().torch_dtype == expected
    assert EngineConfig(device="meta").torch_dtype == torch.bfloat16  # not a CPU: bfloat16
    assert EngineConfig(dtype="bfloat16").torch_dtype == torch.bfloat16  # explicit wins
    assert EngineConfig(dtype="float32").torch_dtype == torch.float32


def test_unknown_dtype_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match="dtype must be one of .*'auto'"):
        EngineConfig(dtype="int8")


def test_int4_width_defaults_per_kernel_and_explicit_values_win():
    assert EngineConfig().int4_max_tokens is None
    assert EngineConfig(dtype="bfloat16").int4_tokens() == 8  # PyTorch's kernel
    assert EngineConfig(dtype="float32").int4_tokens() == 128  # the native float32 kernel
    assert EngineConfig(dtype="float16").int4_tokens() == 0  # no 4-bit kernel: dense
    assert EngineConfig(dtype="float32", int4_max_tokens=3).int4_tokens() == 3
    assert EngineConfig(dtype="bfloat16", int4_max_tokens=0).int4_tokens() == 0
    tuned = EngineConfig(dtype="float32", tune=("int4_max_tokens_float32=64",))
    assert tuned.int4_tokens() == 64
    with pytest.raises(ValueError, match="int4_max_tokens must be >= 0"):
        EngineConfig(int4_max_tokens=-1)


def test_tuning_overrides_parse_and_name_bad_entries():
    assert EngineConfig().tuning.max_in_place_extend == 1024
    tuned = EngineConfig(tune=("max_in_place_extend=512", "ragged-waste-ratio=1.5")).tuning
    assert tuned.max_in_place_extend == 512 and tuned.ragged_waste_ratio == 1.5
    with pytest.raises(ValueError, match="no_such_knob"):
        EngineConfig(tune=("no_such_knob=1",))
    with pytest.raises(ValueError, match="max_in_place_extend takes an integer"):
        EngineConfig(tune=("max_in_place_extend=lots",))
    with pytest.raises(ValueError, match="must be >= 0"):
        EngineConfig(tune=("min_segment_saving=-1",))


def test_tune_is_a_repeatable_cli_option():
    from radixgen.cli import build_parser, engine_config_from_args

    args = build_parser().parse_args(
        ["serve", "--tune", "min_shared_prefix=8", "--tune", "int8_head_max_tokens=0"]
    )
    tuning = engine_config_from_args(args).tuning
    assert tuning.min_shared_prefix == 8 and tuning.int8_head_max_tokens == 0


def test_the_command_line_parses_every_option_as_its_field_is_typed():
    parser = argparse.ArgumentParser()
    add_engine_options(parser)
    options = "--mixed-step-ms 120.5 --swa-full-tokens-ratio 0.25 --mixed-step-tokens 256"
    args = parser.parse_args(options.split())
    config = engine_config_from_args(args)
    assert (config.mixed_step_ms, config.swa_full_tokens_ratio) == (120.5, 0.25)
    assert config.mixed_step_tokens == 256
    assert engine_config_from_args(parser.parse_args([])) == EngineConfig()
    with pytest.raises(ValueError, match="mixed_step_ms must be >= 0"):
        EngineConfig(mixed_step_ms=-1)
