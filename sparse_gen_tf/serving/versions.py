"""Versioned, atomic writes of exports in TF Serving's layout, E/<version>/.

TF Serving polls the model base path and loads the largest integer version; a version
appears whole (written to a hidden directory, then renamed) and is never overwritten.
"""

import json
import os
import shutil
import tempfile

from sparse_gen_tf.errors import UserError

# What each signature does, written beside the SavedModel (a SignatureDef has no
# description field).
INFO_FILE = os.path.join("assets.extra", "signatures.json")


def existing_versions(export_base):
    """The integer versions already in export_base (TF Serving ignores other names)."""
    if not os.path.isdir(export_base):
        return []
    return sorted(int(name) for name in os.listdir(export_base)
                  if name.isdigit() and os.path.isdir(os.path.join(export_base, name)))


def choose_version(export_base, version=None):
    """Creates export_base if needed; returns the version to write (next one if None).

    Raises UserError if export_base cannot be written or `version` already exists.
    """
    try:
        os.makedirs(export_base, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create --export_base={export_base} ({e.strerror}); "
                        "choose a directory you can write to") from None
    if not os.path.isdir(export_base) or not os.access(export_base, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to --export_base={export_base}; choose a directory "
                        "you can write to")
    versions = existing_versions(export_base)
    if version is None:
        return (versions[-1] + 1) if versions else 1
    if version in versions:
        raise UserError(f"version {version} already exists in {export_base}; exports are "
                        f"never overwritten: omit --version to write version "
                        f"{versions[-1] + 1}")
    return version


def write_version(archive, export_base, version, info):
    """Writes archive and info to export_base/<version> atomically; returns the path.

    The SavedModel is written into a hidden temporary directory inside export_base and
    renamed into place, so TF Serving (which polls export_base) never sees a half-written
    version. POSIX rename refuses a non-empty target, so an existing version is never
    replaced even if another export races this one.
    """
    target = os.path.join(export_base, str(version))
    tmp = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=export_base)
    try:
        archive.write_out(tmp, verbose=False)
        os.makedirs(os.path.join(tmp, "assets.extra"), exist_ok=True)
        with open(os.path.join(tmp, INFO_FILE), "w") as f:
            json.dump(info, f, indent=2)
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; a server may run as another user
        if os.path.exists(target):
            raise UserError(f"version {version} appeared in {export_base} during the "
                            "export; rerun to write the next version")
        os.rename(tmp, target)
    except OSError as e:
        raise UserError(f"could not write {target} ({e.strerror}); check the space and "
                        "permissions of --export_base") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
