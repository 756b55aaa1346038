"""Released weights by name: the official MBT checkpoints (scenic's model zoo), a cache that works
offline, and one resolver from ``--model SPEC`` (a model directory, a release name or
``hf-hub:ORG/NAME``) to a model directory. It sits above models/ and convert/ (it converts with
them); docs/convert.md "Pretrained models"."""

from avfusion.zoo.releases import (
    HF_HUB_PREFIX,
    ZOO_BASE_URL,
    PretrainedCfg,
    audioset_class_names,
    audioset_labels_path,
    create_model,
    ensure_pretrained,
    get_pretrained_cfg,
    home,
    is_cached,
    is_pretrained_name,
    list_pretrained,
    load_pretrained_model,
    offline,
    register_pretrained,
    resolve_config,
    resolve_model,
    unregister_pretrained,
)

__all__ = ["HF_HUB_PREFIX", "PretrainedCfg", "ZOO_BASE_URL", "audioset_class_names", "audioset_labels_path", "create_model",
           "ensure_pretrained", "get_pretrained_cfg", "home", "is_cached", "is_pretrained_name", "list_pretrained",
           "load_pretrained_model", "offline", "register_pretrained", "resolve_config", "resolve_model",
           "unregister_pretrained"]
