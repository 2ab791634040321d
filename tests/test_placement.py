"""Per-model placement: the models.config extension, device names, GPU visibility, instance plans.

Pure functions and tables; nothing here needs a GPU (device counts are given, not detected).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from modelserve.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from modelserve.execution.placement import DEFAULT, Placement, Slot, plan
from modelserve.lifecycle.config import ModelConfig, read_model_config_file
from modelserve.platforms import devices
from modelserve.platforms.devices import Inventory
from modelserve.protos import pb

# ---- models.config ---------------------------------------------------------------------------

PLACED = """
model_config_list {
  config {
    name: "resnet"
    base_path: "/models/resnet"
    model_platform: "pytorch"
    placement { devices: "cuda:0,cuda:1" instances: 2 memory_limit_bytes: 4294967296 }
  }
  config {
    name: "mnist"
    base_path: "/models/mnist"
    model_platform: "onnx"
    placement { devices: ["cpu"] instances: 3 }
  }
  config { name: "plain" base_path: "/models/plain" model_platform: "tensorflow" }
}
"""


def test_placement_block_parses(tmp_path: Path) -> None:
    path = tmp_path / "models.config"
    path.write_text(PLACED)
    resnet, mnist, plain = read_model_config_file(str(path))
    assert resnet.placement == Placement(("cuda:0", "cuda:1"), 2, 4 << 30)
    assert mnist.placement == Placement(("cpu",), 3, 0)
    assert plain.placement == DEFAULT
    assert resnet.placement.exclusive and mnist.placement.exclusive and not plain.placement.exclusive


def test_tf_serving_configs_parse_unchanged(tmp_path: Path) -> None:
    # TF Serving's own documentation example: nothing in it changes meaning, and placement is the default.
    path = tmp_path / "models.config"
    path.write_text("""
model_config_list {
  config {
    name: 'my_first_model'
    base_path: '/tmp/my_first_model/'
    model_platform: 'tensorflow'
  }
  config {
    name: 'my_second_model'
    base_path: '/tmp/my_second_model/'
    model_platform: 'tensorflow'
    model_version_policy { specific { versions: 42 versions: 43 } }
    version_labels { key: 'stable' value: 42 }
  }
}
""")
    models = read_model_config_file(str(path))
    assert [m.name for m in models] == ["my_first_model", "my_second_model"]
    assert all(m.placement == DEFAULT for m in models)
    assert models[0] == ModelConfig("my_first_model", "/tmp/my_first_model/", "tensorflow")


def test_extension_is_numbered_away_from_tf_serving() -> None:
    field = pb.ModelConfig.DESCRIPTOR.fields_by_name["placement"]
    assert field.number >= 1000
    # Every other field of ModelConfig is TF Serving's, below 1000.
    assert all(f.number < 1000 for f in pb.ModelConfig.DESCRIPTOR.fields if f.name != "placement")


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ('devices: "tpu:0"', "Model m: placement: Unknown device 'tpu:0': expected cpu, cuda:N or gpu:N"),
        ('devices: "cuda:0" devices: "gpu:0"', "Model m: placement: Device cuda:0 is listed twice"),
        ('devices: "cpu:1"', "Model m: placement: Unknown device 'cpu:1': the CPU is just 'cpu'"),
        ("instances: -1", "Model m: placement: instances must be 0 or more; was -1"),
        ("memory_limit_bytes: -5", "Model m: placement: memory_limit_bytes must be 0 or more; was -5"),
    ],
)
def test_bad_placements_are_refused(tmp_path: Path, block: str, message: str) -> None:
    path = tmp_path / "models.config"
    path.write_text(
        f'model_config_list {{ config {{ name: "m" base_path: "/m" model_platform: "onnx" placement {{ {block} }} }} }}'
    )
    with pytest.raises(InvalidArgument) as caught:
        read_model_config_file(str(path))
    assert str(caught.value) == message


def test_unknown_placement_field_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "models.config"
    path.write_text('model_config_list { config { name: "m" base_path: "/m"\n placement { gpus: 2 } } }')
    with pytest.raises(InvalidArgument, match="line 2 column"):
        read_model_config_file(str(path))


# ---- device names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "device"),
    [
        ("cpu", "cpu"),
        ("CPU", "cpu"),
        ("cuda", "cuda:0"),
        ("gpu", "cuda:0"),
        ("cuda:3", "cuda:3"),
        ("GPU:1", "cuda:1"),
        (" cuda:2 ", "cuda:2"),
    ],
)
def test_device_names(text: str, device: str) -> None:
    assert devices.parse_device(text) == device


def test_device_lists_split_on_commas() -> None:
    assert devices.parse_devices(["cuda:0,cuda:1", "cpu"]) == ("cuda:0", "cuda:1", "cpu")


# ---- visibility: CUDA_VISIBLE_DEVICES and NVIDIA_VISIBLE_DEVICES -------------------------------


@pytest.mark.parametrize(
    ("env", "driver", "visible"),
    [
        ({}, 0, ()),
        ({}, 2, ("0", "1")),
        ({"CUDA_VISIBLE_DEVICES": ""}, 2, ()),
        ({"CUDA_VISIBLE_DEVICES": "-1"}, 2, ()),
        ({"CUDA_VISIBLE_DEVICES": "1"}, 2, ("1",)),
        ({"CUDA_VISIBLE_DEVICES": "1,0"}, 2, ("1", "0")),
        ({"CUDA_VISIBLE_DEVICES": "0,5,1"}, 2, ("0",)),  # CUDA stops at the first index it lacks
        ({"CUDA_VISIBLE_DEVICES": "0,0"}, 2, ("0",)),
        ({"CUDA_VISIBLE_DEVICES": "GPU-8a3c,1"}, 2, ("GPU-8a3c", "1")),
        ({"CUDA_VISIBLE_DEVICES": "0"}, 0, ()),  # no driver: nothing is visible whatever the variable says
    ],
)
def test_visible_gpus(env: dict[str, str], driver: int, visible: tuple[str, ...]) -> None:
    assert devices.visible_gpus(env, driver) == visible


@pytest.mark.parametrize(
    ("env", "driver", "mapped"),
    [
        ({}, 2, None),
        ({"NVIDIA_VISIBLE_DEVICES": "all"}, 2, None),
        ({"NVIDIA_VISIBLE_DEVICES": "none"}, 2, ""),
        ({"NVIDIA_VISIBLE_DEVICES": "void"}, 2, ""),
        ({"NVIDIA_VISIBLE_DEVICES": ""}, 2, ""),
        ({"NVIDIA_VISIBLE_DEVICES": "1"}, 4, "1"),  # outside a container: becomes CUDA_VISIBLE_DEVICES
        ({"NVIDIA_VISIBLE_DEVICES": "2,3"}, 4, "2,3"),
        ({"NVIDIA_VISIBLE_DEVICES": "GPU-aa, GPU-bb"}, 4, "GPU-aa,GPU-bb"),
        ({"NVIDIA_VISIBLE_DEVICES": "3"}, 1, None),  # a container runtime applied it: GPU 0 is that GPU
        ({"NVIDIA_VISIBLE_DEVICES": "1", "CUDA_VISIBLE_DEVICES": "0"}, 4, None),  # CUDA's variable wins
    ],
)
def test_nvidia_visible_devices(env: dict[str, str], driver: int, mapped: str | None) -> None:
    assert devices.visibility_from_nvidia(env, driver) == mapped


def test_nvidia_visible_devices_is_applied_and_then_honoured(caplog: pytest.LogCaptureFixture) -> None:
    env = {"NVIDIA_VISIBLE_DEVICES": "2,3"}
    with caplog.at_level(logging.INFO, "modelserve.platforms.devices"):
        devices.apply_nvidia_visibility(env, 4)
    assert env["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert "CUDA_VISIBLE_DEVICES set to '2,3'" in caplog.text
    inventory = devices.detect(env, driver_gpus=4)
    assert inventory.gpus == ("2", "3")
    assert inventory.nvml_id("cuda:1") == "3"  # NVML numbers GPUs as the driver does


def test_driver_gpus_from_proc_then_nvidia_smi(tmp_path: Path) -> None:
    proc = tmp_path / "gpus"
    proc.mkdir()
    for bus in ("0000:01:00.0", "0000:02:00.0"):
        (proc / bus).mkdir()
    assert devices.driver_gpu_count(proc) == 2
    listing = "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)\nGPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-2)\n"
    assert devices.driver_gpu_count(tmp_path / "absent", smi=lambda: listing) == 2
    assert devices.driver_gpu_count(tmp_path / "absent", smi=lambda: None) == 0


# ---- resolving a model's devices, and its instance plan ---------------------------------------

ONE_GPU = Inventory(("0",))
TWO_GPUS = Inventory(("0", "1"))
NO_GPU = Inventory()


def test_default_device_is_gpu_0_when_visible_else_cpu() -> None:
    assert plan("m", DEFAULT, TWO_GPUS) == [Slot(0, "cuda:0", 0)]
    assert plan("m", DEFAULT, NO_GPU) == [Slot(0, "cpu", 0)]


def test_instances_per_device_share_the_cap() -> None:
    placement = Placement(("cuda:0", "cuda:1"), 2, 1000)
    assert plan("m", placement, TWO_GPUS) == [
        Slot(0, "cuda:0", 500),
        Slot(1, "cuda:0", 500),
        Slot(2, "cuda:1", 500),
        Slot(3, "cuda:1", 500),
    ]


def test_a_gpu_the_machine_lacks_fails_the_load() -> None:
    with pytest.raises(FailedPrecondition, match=r"Model m asks for cuda:1 but only 1 GPU\(s\) are visible"):
        plan("m", Placement(("cuda:1",)), ONE_GPU)


def test_without_any_gpu_a_gpu_placement_runs_on_cpu_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "modelserve.platforms.devices"):
        slots = plan("m", Placement(("cuda:0", "cuda:1"), 2), NO_GPU)
    assert slots == [Slot(0, "cpu", 0), Slot(1, "cpu", 0)]
    assert "Model m asks for cuda:0 but no GPU is visible; it runs on the CPU" in caplog.text


def test_fits_names_the_sizes() -> None:
    devices.check_fits(100, 0)
    devices.check_fits(100, 100, free=100)
    with pytest.raises(
        ResourceExhausted,
        match=r"its weights \(2.00 KiB \(2048 bytes\)\) exceed its memory "
        r"limit there \(1.00 KiB \(1024 bytes\)\)",
    ):
        devices.check_fits(2048, 1024)
    with pytest.raises(ResourceExhausted, match=r"do not fit in the device's free memory \(1000 bytes of "):
        devices.check_fits(2048, 0, free=1000, total=4096)


def test_nvml_answers_none_without_a_driver() -> None:
    # With a driver a number comes back instead: tests/test_gpu.py checks that case.
    if devices.driver_gpu_count() > 0:
        pytest.skip("an NVIDIA driver is present")
    assert devices.Nvml().memory("0") is None
    assert devices.Nvml().memory(None) is None
