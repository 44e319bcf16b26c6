"""Privacy: pseudonymized user ids (:mod:`.pseudonyms`), the right to be forgotten
(:mod:`.forget`), retention of raw partitions (:mod:`.retention`) and differentially
private training (:mod:`.dp`, Opacus, imported lazily)."""

from recsys_dagster.core.privacy.pseudonyms import (
    PrivacyError,
    Pseudonymizer,
    check_key,
    pseudonymizer_from_env,
)

__all__ = ["PrivacyError", "Pseudonymizer", "check_key", "pseudonymizer_from_env"]
