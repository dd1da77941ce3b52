"""What ManiSkill needs before an env can be made: the software Vulkan, the imports, the assets."""

from __future__ import annotations

import os
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parents[2]


def _ensure_vulkan() -> None:
    """Point the Vulkan loader at the project's lavapipe (``.vulkan/``, from scripts/install_mikasa.sh).

    SAPIEN always creates a renderer, even for state observations, so CPU-only machines need a software
    Vulkan. Only done when ``VK_ICD_FILENAMES`` is unset, so a user's own choice (or a GPU driver) wins.
    """
    icd = _REPO_ROOT / ".vulkan" / "lvp_icd.json"
    if "VK_ICD_FILENAMES" not in os.environ and "VK_DRIVER_FILES" not in os.environ and icd.exists():
        os.environ["VK_ICD_FILENAMES"] = str(icd)


def _import_mikasa() -> None:
    """Import ManiSkill and register the MIKASA-Robo ids, with a one-line hint when they are missing."""
    _ensure_vulkan()
    try:
        import mani_skill  # noqa: F401
        import mikasa_robo_suite.rl.memory_envs  # noqa: F401  (registers the 32 "*-v0" ids)
    except ImportError as e:
        raise ImportError(
            f"MIKASA-Robo needs mani-skill and mikasa-robo-suite ({e}); install them with "
            "`bash scripts/install_mikasa.sh` (see docs/mikasa.md)"
        ) from e


def _check_assets(env_id: str) -> None:
    """Fail fast, with a clear message, when a task needs assets that are not on disk.

    ManiSkill would otherwise try to download them inside ``gym.make`` (asking on stdin first): with no
    network and no terminal that is a hang or an obscure error.
    """
    from mani_skill import ASSET_DIR
    from mani_skill.utils import assets
    from mani_skill.utils.registration import REGISTERED_ENVS

    spec = REGISTERED_ENVS[env_id]
    missing = []
    for asset_id in getattr(spec, "asset_download_ids", None) or []:
        if asset_id in assets.DATA_GROUPS:
            sources = assets.expand_data_group_into_individual_data_source_ids(asset_id)
        elif asset_id in assets.DATA_SOURCES:
            sources = [asset_id]
        else:  # an id this ManiSkill version does not know: let gym.make report it
            continue
        missing += [s for s in sources if not assets.is_data_source_downloaded(s)]
    if missing:
        raise FileNotFoundError(
            f"{env_id} needs the ManiSkill asset(s) {sorted(set(missing))}, not found under {ASSET_DIR}: "
            f"run `python -m mani_skill.utils.download_asset ycb` on a machine with network access and copy the "
            f"folder here, or set MS_ASSET_DIR to a directory that holds it (e.g. <dir>/data/assets/mani_skill2_ycb)"
        )
