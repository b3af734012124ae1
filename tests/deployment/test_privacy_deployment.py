"""Personal-data protection in the chart and the compose file: the privacy and investigator roles, the key store
topic audit.keys and its KEK (a file, or a key of a PKCS#11 token), agreeing with `dev up` and the commands."""

from __future__ import annotations

import shlex
import stat
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.permissions.topology import role_names
from pipeline.privacy.keystore import (
    KEK_FILE_VARIABLE,
    KEK_VARIABLE,
    KEYSTORE_USERNAME_VARIABLE,
    kek_from_env,
)
from pipeline.privacy.provision import KEK_FILE_NAME, KEK_ROLES, TOKEN_KEK_LABEL
from pipeline.wire.topics import KEYS_TOPIC
from tests.deployment.conftest import CHART, EVERYTHING_VALUES, Helm
from tests.deployment.test_compose import compose, load_provisioner
from tests.deployment.test_helm_chart import of_kind, pod_specs

FILE_KEK = {"privacy": {"enabled": True, "credentials": {"password": "privacy-secret"},
                        "investigator": {"credentials": {"password": "investigator-secret"}},
                        "kek": {"existingSecret": "auditseal-kek"}}}
TOKEN_KEK = {"privacy": {"enabled": True, "kek": {"pkcs11": {"module": "/opt/hsm/lib/libpkcs11.so", "token": "audit",
                                                             "pinSecret": "auditseal-kek-pin"}}}}


@pytest.fixture(scope="module")
def privacy_rendered(helm: Helm) -> dict[str, str]:
    return {name: helm.template("-f", str(helm.values_file(f"privacy-{name}", {**EVERYTHING_VALUES, **values})))
            for name, values in (("file", FILE_KEK), ("token", TOKEN_KEK))}


def _config_map(manifests: str) -> dict[str, str]:
    (config,) = [c for c in of_kind(manifests, "ConfigMap") if c["metadata"]["name"] == "auditseal-privacy"]
    return config["data"]


@pytest.mark.parametrize("name", ["file", "token"])
def test_the_privacy_manifests_match_the_kubernetes_schemas(privacy_rendered, validate_manifests, name) -> None:
    assert validate_manifests(privacy_rendered[name]) == []


def test_privacy_is_off_by_default(rendered: dict[str, str]) -> None:
    assert "auditseal-privacy" not in rendered["default"] and "keystore" not in rendered["default"]


def test_the_key_store_is_backed_up_by_the_privacy_role_without_the_kek(privacy_rendered) -> None:
    spec = pod_specs(privacy_rendered["file"])["auditseal-keystore-backup"]
    (container,) = spec["containers"]
    assert container["args"] == ["keystore", "backup", f"--topic={KEYS_TOPIC}",
                                 f"--out=/var/lib/auditseal-backup/{KEYS_TOPIC}.backup"]
    env = {e["name"]: e for e in container["env"]}
    assert env["AUDITSEAL_SASL_USERNAME"]["value"] == "privacy"
    assert env["AUDITSEAL_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "auditseal-privacy"
    # the records stay wrapped: the backup's pod holds no KEK (keep the backup apart from the KEK)
    assert not {KEK_VARIABLE, KEK_FILE_VARIABLE, "AUDITSEAL_PKCS11_MODULE"} & set(env)
    assert not any("kek" in str(volume) for volume in spec["volumes"])
    secrets = {s["metadata"]["name"]: s for s in of_kind(privacy_rendered["file"], "Secret")}
    assert secrets["auditseal-privacy"]["stringData"]["sasl-password"] == "privacy-secret"
    assert secrets["auditseal-investigator"]["stringData"]["sasl-password"] == "investigator-secret"
    (policy,) = [p for p in of_kind(privacy_rendered["file"], "NetworkPolicy")
                 if p["metadata"]["name"] == "auditseal-keystore-backup"]
    assert policy["spec"]["ingress"] == [] and len(policy["spec"]["egress"]) == 2  # DNS and the brokers only


def test_the_kek_is_a_file_or_a_key_of_the_token_and_the_commands_read_it_so(privacy_rendered, tmp_path) -> None:
    file_kek, token_kek = _config_map(privacy_rendered["file"]), _config_map(privacy_rendered["token"])
    assert file_kek == {KEYSTORE_USERNAME_VARIABLE: "privacy", KEK_FILE_VARIABLE: "/etc/auditseal/kek/kek.json"}
    assert token_kek == {KEYSTORE_USERNAME_VARIABLE: "privacy", KEK_VARIABLE: f"pkcs11:{TOKEN_KEK_LABEL}",
                         "AUDITSEAL_PKCS11_MODULE": "/opt/hsm/lib/libpkcs11.so", "AUDITSEAL_PKCS11_TOKEN": "audit",
                         "AUDITSEAL_PKCS11_PIN_FILE": "/etc/auditseal/kek-pin/pin"}
    # the variables are the ones the commands read: the token's are taken as a token (its module is absent
    # here), the file's as a file
    pin = tmp_path / "pin"
    pin.write_text("1234\n")
    with pytest.raises(ConfigError, match="PKCS#11 module /opt/hsm/lib/libpkcs11.so: no such file"):
        kek_from_env({**token_kek, "AUDITSEAL_PKCS11_PIN_FILE": str(pin)})
    with pytest.raises(ConfigError, match="/etc/auditseal/kek/kek.json"):
        kek_from_env(file_kek)


@pytest.mark.parametrize("kek, problem", [
    ({"existingSecret": "k", "pkcs11": {"module": "/m.so", "token": "t"}}, "not both"),
    ({}, "set pkcs11.module (a KEK in an HSM) or existingSecret"),
    ({"pkcs11": {"module": "/m.so"}}, "privacy.kek.pkcs11.token"),
])
def test_a_kek_given_twice_or_not_at_all_is_refused(helm: Helm, kek, problem) -> None:
    values = helm.values_file("privacy-bad", {"privacy": {"enabled": True, "kek": kek}})
    result = helm.run("template", "auditseal", str(CHART), "-f", str(values))
    assert result.returncode != 0 and problem in result.stderr


def test_the_chart_names_the_dev_stack_key_store_and_roles() -> None:
    import yaml

    values = yaml.safe_load((CHART / "values.yaml").read_text())["privacy"]
    assert values["keysTopic"] == KEYS_TOPIC
    assert {values["credentials"]["username"], values["investigator"]["credentials"]["username"]} <= set(role_names())
    assert values["kek"]["pkcs11"]["label"] == TOKEN_KEK_LABEL


# --- compose ---------------------------------------------------------------------------------------------


def _env(stack: Path, role: str) -> dict[str, str]:
    text = (stack / "roles" / role / "auditseal.env").read_text()
    return {k: shlex.split(v)[0] if v else v for k, v in (line.removeprefix("export ").split("=", 1)
                                                        for line in text.splitlines())}


def test_compose_runs_erase_and_reveal_as_their_own_roles() -> None:
    services = compose()["services"]
    for role in ("privacy", "investigator"):
        service = services[role]
        assert service["profiles"] == ["tools"] and service["restart"] == "no"
        (mount,) = [v for v in service["volumes"] if isinstance(v, dict) and v["target"] == "/run/auditseal"]
        assert mount["volume"]["subpath"] == f"roles/{role}" and mount["read_only"] is True
    assert services["privacy"]["command"][0] == "erase" and services["investigator"]["command"][0] == "reveal"


def test_compose_gives_the_kek_to_the_key_store_roles_only(tmp_path_factory) -> None:
    stack = tmp_path_factory.mktemp("compose-privacy")
    load_provisioner().make_files(stack)
    kek = (stack / "keys" / KEK_FILE_NAME).read_bytes()
    for role in role_names():
        copy = stack / "roles" / role / KEK_FILE_NAME
        env = _env(stack, role)
        if role in KEK_ROLES:
            assert copy.read_bytes() == kek and stat.S_IMODE(copy.stat().st_mode) == 0o400, role
            assert env[KEK_FILE_VARIABLE] == f"/run/auditseal/{KEK_FILE_NAME}", role
        else:
            assert not copy.exists() and KEK_FILE_VARIABLE not in env, role
    # a producer that protects uses the privacy role's key-store identity
    assert _env(stack, "producer")[KEYSTORE_USERNAME_VARIABLE] == "privacy"
    assert _env(stack, "producer")["AUDITSEAL_KEYSTORE_PASSWORD"] == _env(stack, "privacy")["AUDITSEAL_SASL_PASSWORD"]
    load_provisioner().make_files(stack)  # idempotent: the same KEK (a new one would lose every key)
    assert (stack / "keys" / KEK_FILE_NAME).read_bytes() == kek
