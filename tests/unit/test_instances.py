"""PROVIDERS_FILE: reading the TOML, and what each mistake is told as."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from providers.instances import (Instance, ProvidersFileError, build_instance, instance_settings,
                                 read_instances)
from providers.juhe import Juhe
from providers.openai import OpenAI
from providers.registry import Registry
from providers.zhiqite import Zhiqite

ENTRY = '[[providers]]\nid = "relay-a"\nkind = "openai"\nbase_url = "https://relay.example/v1"\nsecret_env = "RELAY_A_KEY"\nmodel = "flux-1-schnell"\nprice = 3\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "providers.toml"
    path.write_text(text, "utf-8")
    return path


def settings(**values: object) -> SimpleNamespace:
    base = {name: None for name in ("openai_api_key", "juhe_api_key", "zhiqite_app_code",
                                    "zhiqite_access_key_id", "zhiqite_access_key_secret")}
    base.update(openai_base_url="https://api.openai.com/v1", openai_image_model="gpt-image-1",
                juhe_base_url="https://gpt.juhe.cn", zhiqite_base_url="", default_provider="",
                sandbox_enabled=False, public_base_url="", sandbox_job_seconds=1.0)
    base.update(values)
    return SimpleNamespace(**base)


def test_an_entry_is_read_whole(tmp_path: Path) -> None:
    [instance] = read_instances(write(tmp_path, ENTRY))
    assert (instance.id, instance.kind, instance.base_url, instance.secret_env, instance.model, instance.price) == (
        "relay-a", "openai", "https://relay.example/v1", "RELAY_A_KEY", "flux-1-schnell", 3)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[providers]\n", "not valid TOML"),
        (ENTRY.replace('id = "relay-a"', 'id = "Relay A"'), "providers entry 1: id: String should match"),
        (ENTRY + 'colour = "red"\n', "providers entry 1: colour: Extra inputs are not permitted"),
        (ENTRY.replace('kind = "openai"\n', ""), "providers entry 1: kind: Field required"),
        (ENTRY + ENTRY, "id 'relay-a' is used twice"),
        ('title = "x"\n', "expected only [[providers]] entries"),
        (ENTRY.replace('secret_env = "RELAY_A_KEY"', 'secret_env = "sk-live-123 456"'), "secret_env"),
    ],
)
def test_each_mistake_is_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ProvidersFileError, match="PROVIDERS_FILE") as raised:
        read_instances(write(tmp_path, text))
    assert message in str(raised.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ProvidersFileError, match="cannot be read"):
        read_instances(tmp_path / "nope.toml")


async def test_an_instance_is_its_kind_under_its_own_id(tmp_path: Path) -> None:
    [instance] = read_instances(write(tmp_path, ENTRY))
    async with httpx.AsyncClient() as client:
        adapter = build_instance(instance, OpenAI, settings(), client, environ={"RELAY_A_KEY": "relay-secret"})
    assert (adapter.id, adapter.base_url, adapter.model_name, adapter.price) == (
        "relay-a", "https://relay.example/v1", "flux-1-schnell", 3)
    assert adapter.title == "OpenAI · relay-a" and "relay-secret" not in repr(adapter)
    assert OpenAI.id == "openai"  # the kind itself is untouched


def test_what_a_kind_cannot_take_is_refused() -> None:
    with pytest.raises(ProvidersFileError, match="no model to choose"):
        instance_settings(Instance(id="j2", kind="juhe", model="x"), Juhe, settings())
    # zhiqite's single secret is its APP code (the access-key pair needs the variables).
    view = instance_settings(Instance(id="z2", kind="zhiqite", secret_env="Z2"), Zhiqite, settings(), {"Z2": "v"})
    assert view.zhiqite_app_code == "v" and view.zhiqite_access_key_id is None
    with pytest.raises(ProvidersFileError, match="base_url must be an http"):
        instance_settings(Instance(id="o2", kind="openai", base_url="relay.example"), OpenAI, settings())


async def test_the_registry_refuses_unknown_kinds_and_taken_ids(tmp_path: Path) -> None:
    async with httpx.AsyncClient() as client:
        unknown = write(tmp_path, ENTRY.replace('kind = "openai"', 'kind = "dalle"'))
        with pytest.raises(ProvidersFileError, match="unknown kind 'dalle'"):
            Registry.from_settings(settings(providers_file=str(unknown)), client)
        taken = write(tmp_path, ENTRY.replace('id = "relay-a"', 'id = "juhe"'))
        with pytest.raises(ProvidersFileError, match="that id is a vendor's own"):
            Registry.from_settings(settings(providers_file=str(taken)), client)


async def test_an_instance_on_another_host_never_gets_the_kinds_own_key(tmp_path: Path) -> None:
    text = ENTRY.replace('secret_env = "RELAY_A_KEY"\n', "")
    [instance] = read_instances(write(tmp_path, text))
    async with httpx.AsyncClient() as client:
        with pytest.raises(ProvidersFileError, match="has no credentials: give secret_env"):
            build_instance(instance, OpenAI, settings(openai_api_key="sk-the-operators-openai-key"), client)
        # Same host as the kind (no base_url): its own key is the instance's too.
        same = Instance(id="gpt", kind="openai", model="dall-e-3")
        adapter = build_instance(same, OpenAI, settings(openai_api_key="sk-own"), client)
        assert adapter.base_url == "https://api.openai.com/v1"


def test_log_redaction_gets_the_secrets_as_they_are_used(tmp_path: Path) -> None:
    from providers.instances import instance_secrets

    path = write(tmp_path, ENTRY)
    assert instance_secrets(str(path), {"RELAY_A_KEY": "  relay-secret\n"}) == ["relay-secret"]


async def test_a_second_midjourney_proxy_with_its_own_secret() -> None:
    from providers.mjproxy import MjProxy

    instance = Instance(id="mj-backup", kind="mjproxy", base_url="http://10.0.0.5:8080", secret_env="MJ_B")
    async with httpx.AsyncClient() as client:
        adapter = build_instance(instance, MjProxy, settings(mj_proxy_base_url="", mj_proxy_api_secret=None),
                                 client, environ={"MJ_B": "backup-secret"})
        # Without secret_env on another host, the main proxy's secret stays home.
        bare = build_instance(Instance(id="mj-open", kind="mjproxy", base_url="http://10.0.0.6:8080"), MjProxy,
                              settings(mj_proxy_base_url="http://main:8080", mj_proxy_api_secret="main-secret"), client)
    assert (adapter.id, adapter.base_url, adapter.secret("mj_proxy_api_secret")) == (
        "mj-backup", "http://10.0.0.5:8080", "backup-secret")
    assert bare.auth is None


def test_an_instance_on_another_host_gets_no_key_pair_of_the_kind_either() -> None:
    view = instance_settings(Instance(id="zq2", kind="zhiqite", base_url="https://other.example"), Zhiqite,
                             settings(zhiqite_access_key_id="AKID", zhiqite_access_key_secret="SEKRET"))
    assert Zhiqite.credentials.lookup(view) is None
