"""models.config files: TF Serving's text format and its validation texts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from modelserve.errors import InvalidArgument
from modelserve.lifecycle.config import ModelConfig, read_model_config_file
from modelserve.lifecycle.policy import VersionPolicy

USERS_WRITE_THIS = """
# TF Serving's documentation example, with the text-format niceties users rely on
model_config_list: {
  config: {
    name: 'resnet',
    base_path: "/models/resnet"
    model_platform: "tensorflow"
    model_version_policy: { specific { versions: [7, 8] } }
    version_labels { key: "stable" value: 7 }
    version_labels { key: "canary" value: 8 }
  }
  config { name: "bert" base_path: "/models/bert" model_type: TENSORFLOW
           model_version_policy { latest { num_versions: 2 } } }
  config { name: "all" base_path: "s3://bucket/all" model_platform: "onnx" model_version_policy { all {} } }
}
"""


def test_every_shape_users_write_parses(tmp_path: Path) -> None:
    path = tmp_path / "models.config"
    path.write_text(USERS_WRITE_THIS)
    assert read_model_config_file(str(path)) == [
        ModelConfig(
            "resnet",
            "/models/resnet",
            "tensorflow",
            VersionPolicy("specific", versions=(7, 8)),
            {"stable": 7, "canary": 8},
        ),
        ModelConfig("bert", "/models/bert", "tensorflow", VersionPolicy("latest", num_versions=2)),
        ModelConfig("all", "s3://bucket/all", "onnx", VersionPolicy("all")),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "model_config_list { config { name: 'm' base_path: '/m' model_platform: 'x' model_type: TENSORFLOW } }",
            "Illegal setting both ModelServerConfig::model_type (deprecated) and "
            "ModelServerConfig::model_platform, model name is m",
        ),
        (
            "model_config_list { config { name: 'm' base_path: '/m' } }",
            "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
            "ModelServerConfig::model_platform, model name is m",
        ),
        (
            "custom_model_config { }",
            "ServerModelConfig type not supported by HandleReloadConfigRequest. "
            "Only ModelConfigList is currently supported",
        ),
        (
            "model_config_list {\n  config { name: 'm' bas_path: '/m' }\n}",
            'line 2 column 22: Message type "tensorflow.serving.ModelConfig" has no field named "bas_path".',
        ),
    ],
)
def test_tf_serving_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "models.config"
    path.write_text(text)
    with pytest.raises(InvalidArgument) as raised:
        read_model_config_file(str(path))
    assert message in str(raised.value)
    if "line" in message:
        assert str(raised.value).startswith(f"Invalid protobuf file: '{path}': ")


def test_parse_error_is_logged_in_protobufs_words(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # TF Serving's C++ protobuf prints this line on stderr; scripts watching a server's stderr look for it.
    path = tmp_path / "models.config"
    path.write_text("model_config_list {\n  config { name: 'm' bas_path: '/m' }\n}")
    with pytest.raises(InvalidArgument):
        read_model_config_file(str(path))
    assert (
        "Error parsing text-format tensorflow.serving.ModelServerConfig: 2:22: "
        'Message type "tensorflow.serving.ModelConfig" has no field named "bas_path".'
    ) in caplog.text


def test_unparsable_config_file_fails_start_up_saying_so_on_stderr(tmp_path: Path) -> None:
    path = tmp_path / "bad.config"
    path.write_text("improperly formatted file")
    command = [sys.executable, "-m", "modelserve", "--port=-1", "--rest_api_port=-1", f"--model_config_file={path}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 255
    assert "Error parsing text-format tensorflow.serving.ModelServerConfig: 1:1: " in result.stderr
    assert f"Invalid protobuf file: '{path}'" in result.stderr


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"^Invalid protobuf file: '.*absent': No such file or directory$"):
        read_model_config_file(str(tmp_path / "absent"))
