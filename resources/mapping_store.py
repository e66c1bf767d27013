"""Which mapping each source's pipeline maps with now: the built-in file, or one an operator installed.

`data-mash reprocess` installs a changed mapping as `$DATA_MASH_HOME/mappings/<source>.yaml`; from then on
the canonical assets map with it (new drops, and the backfill over past ones). The file it replaces is kept
beside it as `<source>.yaml.<UTC time>`, so going back is one more install. Every install is a WAL intent
(namespace `canonical`, operation `install_mapping`) naming the old and new version and hash.

The asset graph is built from the built-in mappings (definitions never depend on a home folder), so an
installed mapping must fill the same canonical tables from the same file kinds.
"""

import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from canonical.mapping import Mapping, MappingError, load_mapping, mapping_for_source
from resources.database import data_mash_home
from resources.wal import WalStore


def installed_mappings_dir() -> Path:
    return data_mash_home() / "mappings"


def active_mapping_path(source: str, directory: Path | None = None) -> Path:
    """The mapping a source's drops are mapped with: the installed one if there is one, else the built-in."""
    installed = (directory or installed_mappings_dir()) / f"{source}.yaml"
    return installed if installed.is_file() else mapping_for_source(source)


def active_mapping(source: str, source_columns: dict[str, set[str]] | None = None) -> Mapping:
    return load_mapping(active_mapping_path(source), source_columns)


def check_installable(mapping: Mapping) -> None:
    """Refuse a mapping the pipeline cannot use as it is: a draft, or other tables or file kinds than the assets'."""
    where = mapping.path or "<mapping>"
    if mapping.spec.draft:
        raise MappingError(f"{where}: draft: true: review it (`data-mash validate-mapping {where}`) and set "
                           "`draft: false` before installing it")
    builtin = load_mapping(mapping_for_source(mapping.spec.source))
    expected = {t: m.from_ for t, m in builtin.spec.tables.items()}
    found = {t: m.from_ for t, m in mapping.spec.tables.items()}
    if found != expected:
        detail = ", ".join(f"{t} from {k}" for t, k in sorted(expected.items()))
        raise MappingError(f"{where}: tables: the {mapping.spec.source} assets map exactly {detail}; this mapping "
                           f"has {', '.join(f'{t} from {k}' for t, k in sorted(found.items()))}. Other tables need a "
                           f"change of canonical/mappings/{mapping.spec.source}.yaml and a new release")


@dataclass
class MappingInstall:
    source: str
    path: Path  # the active mapping now
    backup: Path  # the mapping it replaced, kept
    old_version: str
    old_hash: str
    new_version: str
    new_hash: str
    wal_id: int


class MappingStore:
    """Install mappings into a home's `mappings/` folder, through the WAL."""

    def __init__(self, wal: WalStore, directory: Path | None = None):
        self.wal = wal
        self.directory = directory or installed_mappings_dir()

    def install(self, mapping: Mapping, actor: str = "operator") -> MappingInstall:
        """Make `mapping` its source's active mapping; keep the replaced file as `<source>.yaml.<UTC time>`."""
        check_installable(mapping)
        source = mapping.spec.source
        with self.wal.owned(f"canonical:install_mapping:{source}"):  # one install per source at a time
            current_path = active_mapping_path(source, self.directory)
            current = load_mapping(current_path)
            if current.hash == mapping.hash:
                raise MappingError(f"{mapping.path}: mapping {mapping.name} {mapping.version} (hash "
                                   f"{mapping.hash[:12]}) is already the active mapping of {source}")
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            target = self.directory / f"{source}.yaml"
            backup = self._free(self.directory / f"{source}.yaml.{stamp}")
            intent = self.wal.begin(
                namespace="canonical", operation="install_mapping", target=str(target),
                key=f"canonical:install_mapping:{source}:{current.hash}:{mapping.hash}:{stamp}",
                payload={"source": source, "actor": actor,
                         "old": {"mapping": current.name, "version": current.version, "hash": current.hash,
                                 "file": str(current_path)},
                         "new": {"mapping": mapping.name, "version": mapping.version, "hash": mapping.hash,
                                 "file": str(Path(mapping.path).resolve())},
                         "backup": str(backup)})
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(current_path, backup)
                staged = target.with_name(f".{target.name}.{stamp}.tmp")
                staged.write_bytes(Path(mapping.path).read_bytes())
                os.replace(staged, target)  # atomic: the active mapping is the old file or the new, never half
            except OSError as error:
                self.wal.fail(intent, f"{type(error).__name__}: {error}")
                raise
            self.wal.commit(intent, {"active": str(target), "backup": str(backup)})
        return MappingInstall(source, target, backup, current.version, current.hash, mapping.version, mapping.hash,
                              intent.id)

    @staticmethod
    def _free(path: Path) -> Path:
        n, candidate = 1, path
        while candidate.exists():
            n += 1
            candidate = path.with_name(f"{path.name}-{n}")
        return candidate
