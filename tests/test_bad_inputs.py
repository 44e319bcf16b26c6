"""Bad-input corpus: every kind of broken input, through the generic format and the
MovieLens loaders. Unusable files fail with one line naming the file, the row and the
problem; bad rows are quarantined with a reason. Everywhere: raw = cleaned + quarantined,
nothing lost, nothing duplicated."""

import shutil
from dataclasses import dataclass

import pandas as pd
import pytest
from conftest import DATA_DIR, make_settings, requires_ml100k, run_assets

from recsys_dagster.core.cleaning import CleaningConfig, clean_interactions
from recsys_dagster.core.datasets import DatasetError, open_dataset
from recsys_dagster.core.knowledge_graph import build_knowledge_graph

HEADER = "user_id,item_id,timestamp,rating"
T = 1704196800  # 2024-01-02 12:00 UTC, inside the synthetic span


@dataclass
class Ingested:
    raw: pd.DataFrame
    cleaned: pd.DataFrame
    quarantine: pd.DataFrame
    items: pd.DataFrame
    item_rejects: pd.DataFrame
    user_rejects: pd.DataFrame


def ingest(dataset) -> Ingested:
    """What the ingestion assets do, in-process, with the invariant asserted."""
    items, item_rejects = dataset.read_items()
    users, user_rejects = dataset.read_users()
    raw = dataset.raw_interactions()
    span = dataset.span()
    config = CleaningConfig(rating_range=dataset.rating_range, known_users=frozenset(users["user_id"]),
                            known_items=frozenset(items["item_id"]))
    cleaned, quarantine = clean_interactions(raw, span.start, span.end, config)
    lines = [x for x in dataset.interactions_path.read_bytes().splitlines()[int(dataset.interactions_header):] if x.strip()]
    assert len(raw) == len(lines), "every data line becomes exactly one raw row"
    assert len(cleaned) + len(quarantine) == len(raw), "raw = cleaned + quarantined"
    rows = sorted(cleaned["source_row"].tolist() + quarantine["source_row"].tolist())
    assert rows == sorted(raw["source_row"].tolist()), "nothing lost, nothing duplicated"
    assert quarantine["reason"].notna().all() and (quarantine["reason"] != "").all()
    return Ingested(raw, cleaned, quarantine, items, item_rejects, user_rejects)


def _folder(synthetic_folder, lines: list[str]):
    with open(synthetic_folder / "interactions.csv", "a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return open_dataset(str(synthetic_folder))


def _first_pair(folder) -> tuple[str, str]:
    row = pd.read_csv(folder / "interactions.csv", dtype=str).iloc[0]
    return row.user_id, row.item_id


ROW_CASES = {
    "too many fields": ("{u},{i},{t},4,extra,more", "malformed line: expected"),
    "too few fields": ("{u},{i}", "malformed line: expected"),
    "unterminated quote": ('{u},"{i},{t},4', "malformed line"),
    "rating is text": ("{u},{i},{t},four", "rating is not a number"),
    "rating NaN": ("{u},{i},{t},NaN", "rating is not a number"),
    "rating inf": ("{u},{i},{t},inf", "rating is not finite"),
    "rating negative": ("{u},{i},{t},-2", "rating outside"),
    "rating missing": ("{u},{i},{t},", "missing rating"),
    "empty user id": (",{i},{t},4", "missing user_id"),
    "whitespace item id": ("{u},   ,{t},4", "missing item_id"),
    "control char in id": ("{u},i\x07x,{t},4", "malformed item_id"),
    "user id overflowing int64 (unknown)": ("99999999999999999999999,{i},{t},4", "unknown user_id"),
    "item not in items": ("{u},no_such_item,{t},4", "unknown item_id"),
    "duplicate event": ("{u},{i},{t0},{r0}", "duplicate event"),
    "timestamp text": ("{u},{i},yesterday,4", "unparseable timestamp"),
    "timestamp in the future": ("{u},{i},4102444800,4", "timestamp in the future"),
    "timestamp before 1970": ("{u},{i},-86400,4", "timestamp before 1970-01-01"),
    "timestamp in milliseconds among seconds": ("{u},{i},{tms},4", "timestamp out of range"),
    "timestamp missing": ("{u},{i},,4", "missing timestamp"),
}


@pytest.mark.parametrize("case", list(ROW_CASES))
def test_bad_interaction_row_is_quarantined_with_its_reason(synthetic_folder, case):
    template, reason = ROW_CASES[case]
    first = pd.read_csv(synthetic_folder / "interactions.csv", dtype=str).iloc[0]
    line = template.format(u=first.user_id, i=first.item_id, t=T, t0=first.timestamp, r0=first.rating, tms=T * 1000)
    out = ingest(_folder(synthetic_folder, [line]))
    bad = out.quarantine[out.quarantine["source_row"] == out.raw["source_row"].max()]
    assert len(bad) == 1 and bad["reason"].iloc[0].startswith(reason), out.quarantine["reason"].tolist()
    assert len(out.quarantine) == 1  # only the bad line


def test_latin1_bytes_in_utf8_file_are_quarantined_verbatim(synthetic_folder):
    u, i = _first_pair(synthetic_folder)
    with open(synthetic_folder / "interactions.csv", "ab") as f:
        f.write(f"{u},{i},{T},4,".encode()[:-1] + b"\n" + b"caf\xe9," + f"{i},{T},4\n".encode())
    out = ingest(open_dataset(str(synthetic_folder)))
    reasons = out.quarantine["reason"].tolist()
    assert any("invalid utf-8 bytes" in r for r in reasons)
    assert (out.quarantine["user_id"] == "caf\ufffd").any()  # what was there, decoded with U+FFFD


def test_big_ids_are_opaque_strings_not_numbers(synthetic_folder):
    big = "99999999999999999999999"
    width = len((synthetic_folder / "users.csv").read_text().splitlines()[0].split(","))
    with open(synthetic_folder / "users.csv", "a") as f:
        f.write(big + "," * (width - 1) + "\n")
    _, i = _first_pair(synthetic_folder)
    out = ingest(_folder(synthetic_folder, [f"{big},{i},{T},4"]))
    assert (out.cleaned["user_id"] == big).sum() == 1  # not rounded to 1e23, not rejected


def test_extra_columns_are_ignored_and_rows_kept(synthetic_folder):
    frame = pd.read_csv(synthetic_folder / "interactions.csv", dtype=str)
    frame["device"] = "phone"
    frame.to_csv(synthetic_folder / "interactions.csv", index=False)
    out = ingest(open_dataset(str(synthetic_folder)))
    assert len(out.cleaned) == len(frame) and out.quarantine.empty


@pytest.mark.parametrize("content, problem", [
    (b"", "empty file"),
    (b"   \n\n", "empty file"),
    (HEADER.encode() + b"\n", "no data rows"),
    (b"user,item,timestamp,rating\nu1,i1,1704196800,4\n", "line 1: missing required column(s) ['user_id', 'item_id']"),
    (b"user_id,item_id,user_id\nu1,i1,u2\n", "line 1: duplicate column names"),
])
def test_unusable_interaction_file_is_one_line_error_naming_it(synthetic_folder, content, problem):
    path = synthetic_folder / "interactions.csv"
    path.write_bytes(content)
    with pytest.raises(DatasetError) as exc:
        ingest(open_dataset(str(synthetic_folder)))
    message = str(exc.value)
    assert "\n" not in message and str(path) in message and problem in message


def test_invalid_dataset_json_is_one_line_error(synthetic_folder):
    (synthetic_folder / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"dataset\.json: invalid JSON"):
        open_dataset(str(synthetic_folder))


def test_bad_item_and_user_rows(synthetic_folder):
    items = pd.read_csv(synthetic_folder / "items.csv", dtype=str)
    huge = items.iloc[0].copy()
    huge["item_id"], huge["title"] = "huge_title_item", "x" * (1 << 20)  # a 1 MB title
    dup = items.iloc[1].copy()
    empty = items.iloc[2].copy()
    empty["item_id"] = "  "
    pd.concat([items, pd.DataFrame([huge, dup, empty])]).to_csv(synthetic_folder / "items.csv", index=False)
    with open(synthetic_folder / "users.csv", "a") as f:
        f.write(",,,\n")
    out = ingest(open_dataset(str(synthetic_folder)))
    kept = out.items.set_index("item_id").loc["huge_title_item"]
    assert len(kept["title"]) == 4096 and '"text_truncated": true' in kept["attributes"]
    reasons = out.item_rejects["reason"].tolist()
    assert "duplicate item_id (first occurrence kept)" in reasons and "missing item_id" in reasons
    assert len(out.items) + len(out.item_rejects) == len(items) + 3
    assert any(r.startswith("missing user_id") or r.startswith("malformed line") for r in out.user_rejects["reason"])


def test_bad_knowledge_graph_triples_and_links_are_quarantined(synthetic_folder):
    with open(synthetic_folder / "kg.tsv", "a") as f:
        f.write("e_self\tsame_as\te_self\n")      # self-loop
        f.write("e_a\tlinks\t\n")                 # dangling: no tail
        f.write("\tlinks\te_b\n")                 # dangling: no head
        f.write("only_two\tfields\n")             # malformed
    with open(synthetic_folder / "item_entities.csv", "a") as f:
        f.write("no_such_item,e_x\n")
    dataset = open_dataset(str(synthetic_folder))
    items, _ = dataset.read_items()
    users, _ = dataset.read_users()
    kg = build_knowledge_graph(items, users, dataset.external_kg())
    reasons = kg.rejects["reason"].tolist()
    assert "self-loop triple" in reasons and reasons.count("missing head, relation or tail") == 2
    assert any(r.startswith("malformed line") for r in reasons) and "link to an item not in items" in reasons
    ids = set(kg.entities["entity_id"])
    assert set(kg.triples["head"]) <= ids and set(kg.triples["tail"]) <= ids  # nothing dangling kept


def test_kg_without_links_file_is_one_line_error(synthetic_folder):
    (synthetic_folder / "item_entities.csv").unlink()
    with pytest.raises(DatasetError, match="found without item_entities.csv"):
        open_dataset(str(synthetic_folder)).external_kg()


def test_every_corruption_at_once_through_the_dagster_assets(tmp_path, synthetic_folder):
    """All row-level corruptions in one file, ingested by the real assets; the warehouse
    reconciles (raw = cleaned + quarantined per table) and the blocking checks pass."""
    import duckdb

    from recsys_dagster.definitions import build_definitions

    first = pd.read_csv(synthetic_folder / "interactions.csv", dtype=str).iloc[0]
    lines = [t.format(u=first.user_id, i=first.item_id, t=T, t0=first.timestamp, r0=first.rating, tms=T * 1000)
             for t, _ in ROW_CASES.values()]
    _folder(synthetic_folder, lines)
    n_lines = sum(1 for x in (synthetic_folder / "interactions.csv").read_bytes().splitlines()[1:] if x.strip())
    settings = make_settings(tmp_path, str(synthetic_folder))
    defs = build_definitions(settings)
    span = open_dataset(str(synthetic_folder)).span()
    run_assets(defs, "items,users")
    result = run_assets(defs, "raw_interactions,cleaned_interactions", partition_range=(str(span.start), str(span.end)))
    assert all(c.passed for c in result.get_asset_check_evaluations())
    conn = duckdb.connect(settings.warehouse, read_only=True)
    raw, clean, quarantined = (conn.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]
                               for t in ("raw_interactions", "cleaned_interactions", "interactions_quarantine"))
    reasons = [r[0] for r in conn.execute("SELECT reason FROM interactions_quarantine").fetchall()]
    conn.close()
    assert raw == n_lines == clean + quarantined
    assert quarantined == len(ROW_CASES)
    for _, reason in ROW_CASES.values():
        assert any(r.startswith(reason) for r in reasons), reason


@requires_ml100k
def test_corrupted_movielens_mirror(tmp_path):
    """The MovieLens loaders on a mirror with broken lines appended to u.data, u.item, u.user."""
    mirror = tmp_path / "mirror"
    shutil.copytree(DATA_DIR / "ml-100k", mirror / "ml-100k")
    with open(mirror / "ml-100k" / "u.data", "ab") as f:
        f.write(b"1\t1\t5\n")                          # too few fields
        f.write(b"1\t1\t-1\t881250949\n")              # rating outside [1, 5]
        f.write(b"1\t1\t4\t881250949000\n")            # milliseconds among seconds
        f.write(b"1\t1\t4\t4102444800\n")              # future
        f.write(b"1\t99999\t4\t881250949\n")           # item not in u.item
        f.write(b"\t1\t4\t881250949\n")                # empty user id
        f.write(b"196\t242\t3\t881250949\n")           # exact duplicate of line 1
    with open(mirror / "ml-100k" / "u.item", "ab") as f:
        f.write(b"1683|Caf\xe9 (1998)|01-Jan-1998||http://x|" + b"|".join([b"0"] * 19) + b"\n")
        f.write(b"1684|" + b"y" * (1 << 20) + b"|01-Jan-1998||http://x|" + b"|".join([b"0"] * 19) + b"\n")
        f.write(b"1685|too|few\n")
    with open(mirror / "ml-100k" / "u.user", "ab") as f:
        f.write(b"|24|M|technician|85711\n")
    dataset = open_dataset("movielens-100k", mirror_dir=str(mirror), verify_checksums=False)
    out = ingest(dataset)
    reasons = out.quarantine["reason"].tolist()
    for expected in ("malformed line", "rating outside", "timestamp out of range", "timestamp in the future",
                     "unknown item_id", "missing user_id", "duplicate event"):
        assert any(r.startswith(expected) for r in reasons), expected
    assert len(out.quarantine) == 7 and len(out.cleaned) == 100_000
    items = out.items.set_index("item_id")
    assert items.loc["1683", "title"] == "Café (1998)"  # u.item is latin-1 by definition: decoded, not rejected
    assert len(items.loc["1684", "title"]) == 4096
    assert any(r.startswith("malformed line") for r in out.item_rejects["reason"])
    assert "missing user_id" in out.user_rejects["reason"].tolist()
    with pytest.raises(DatasetError) as exc:  # with checksums on, the modified mirror is refused in one line
        open_dataset("movielens-100k", mirror_dir=str(mirror), download_dir=str(tmp_path / "dl")).raw_interactions()
    assert "\n" not in str(exc.value) and "u.data" in str(exc.value)
