import json

import pytest

from avfusion.data import adapters
from avfusion.data.manifest import LabelMap, ManifestError, UnknownLabel, read_manifest, write_manifest


def test_csv_and_jsonl_manifests(tmp_path):
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.mp4").write_bytes(b"x")
    csv_path = tmp_path / "m.csv"
    csv_path.write_text("path,start,end,labels,extra\nclips/a.mp4,1.5,,Dog;/m/cat,7\n")
    (r,) = read_manifest(csv_path)
    assert r.id == "a" and r.path == str(tmp_path / "clips" / "a.mp4")
    assert (r.start, r.end, r.labels, r.extra) == (1.5, None, ["Dog", "/m/cat"], {"extra": "7"})
    jl = tmp_path / "m.jsonl"
    jl.write_text(json.dumps({"id": "x", "path": "/abs/b.mp4", "labels": ["Dog"], "end": 3}) + "\n\n")
    (r2,) = read_manifest(jl)
    assert (r2.id, r2.path, r2.end, r2.labels) == ("x", "/abs/b.mp4", 3.0, ["Dog"])
    write_manifest([r, r2], tmp_path / "out.jsonl")
    assert [x.id for x in read_manifest(tmp_path / "out.jsonl")] == ["a", "x"]
    write_manifest([r, r2], tmp_path / "out.csv")
    assert [x.labels for x in read_manifest(tmp_path / "out.csv")] == [["Dog", "/m/cat"], ["Dog"]]
    bad = tmp_path / "bad.csv"
    bad.write_text("file,labels\na.mp4,Dog\n")
    with pytest.raises(ManifestError, match="no 'path' column"):
        read_manifest(bad)
    bad.write_text("path,start\na.mp4,soon\n")
    with pytest.raises(ManifestError, match=r"bad.csv: 1 malformed row\(s\): line 2: start 'soon' is not a number"):
        read_manifest(bad)


def test_label_map_encodings(corpus):
    lm = LabelMap.read(corpus.labels)
    assert lm.num_classes == 3 and lm.names == ["Dog", "Cat", "Bird"]
    assert lm.encode(["/m/dog", "Bird"]).tolist() == [1.0, 0.0, 1.0]
    with pytest.raises(UnknownLabel, match="Walrus"):
        lm.encode(["Walrus"])
    single = LabelMap.read(corpus.labels, mode="single")
    assert single.encode(["Cat"]) == 1
    with pytest.raises(ManifestError):
        single.encode(["Cat", "Dog"])
    heads = LabelMap.from_names(["take", "put"], head="verb").entries + LabelMap.from_names(["cup"], head="noun").entries
    mh = LabelMap(heads)
    assert mh.mode == "multihead" and mh.head_sizes() == {"verb": 2, "noun": 1}
    assert mh.encode(["verb:put", "noun:cup"]) == {"verb": 1, "noun": 0}
    with pytest.raises(UnknownLabel):
        mh.encode(["put", "noun:cup"])
    with pytest.raises(ManifestError, match="no label for head"):
        mh.encode(["verb:put"])


def _write(path, text):
    path.write_text(text)
    return path


def test_audioset_adapter(tmp_path):
    seg = _write(tmp_path / "seg.csv", "# Segments csv\n# YTID, start_seconds, end_seconds, positive_labels\n"
                 '--4gqARaEJE, 0.000, 10.000, "/m/068hy,/m/07q6cd_"\n-0SdAVK79lg, 30.000, 40.000, "/m/0glt670"\n')
    lab = _write(tmp_path / "class_labels_indices.csv", 'index,mid,display_name\n0,/m/068hy,Domestic animals\n'
                 '1,/m/07q6cd_,Squeak\n2,/m/0glt670,"Hip hop music"\n')
    (tmp_path / "--4gqARaEJE_0.mp4").write_bytes(b"x")
    rows, lm = adapters.audioset(seg, lab, root=tmp_path)
    assert [r.id for r in rows] == ["--4gqARaEJE_0", "-0SdAVK79lg_30"]
    assert rows[0].labels == ["/m/068hy", "/m/07q6cd_"]
    assert lm.encode(rows[0].labels).tolist() == [1.0, 1.0, 0.0]
    assert rows[1].path == str(tmp_path / "-0SdAVK79lg_30.mp4")
    assert adapters.report_missing(rows) == (1, ["-0SdAVK79lg_30"])


def test_vggsound_adapter(tmp_path):
    f = _write(tmp_path / "vggsound.csv", "---g-f_I2yQ,1,people marching,test\n--0PQM4-hqg,30,waterfall burbling,train\n")
    rows, lm = adapters.vggsound(f, root=tmp_path, split="train")
    assert [r.id for r in rows] == ["--0PQM4-hqg_000030"]
    assert rows[0].path.endswith("--0PQM4-hqg_000030.mp4")
    assert lm.names == ["people marching", "waterfall burbling"] and lm.encode(rows[0].labels) == 1


def test_kinetics_sounds_adapter(tmp_path):
    f = _write(tmp_path / "train.csv", "label,youtube_id,time_start,time_end,split\n"
               "playing bagpipes,abc,10,20,train\n\"abseiling\",def,0,10,train\n")
    rows, lm = adapters.kinetics_sounds(f, root=tmp_path)
    assert len(rows) == 1 and rows[0].labels == ["playing bagpipes"]
    assert rows[0].path == str(tmp_path / "playing bagpipes" / "abc_000010_000020.mp4")
    assert lm.num_classes == len(adapters.KINETICS_SOUNDS) == 34


def test_epic_kitchens_adapter(tmp_path):
    ann = _write(tmp_path / "EPIC_100_train.csv",
                 "narration_id,participant_id,video_id,narration_timestamp,start_timestamp,stop_timestamp,"
                 "start_frame,stop_frame,narration,verb,verb_class,noun,noun_class,all_nouns,all_noun_classes\n"
                 'P01_01_0,P01,P01_01,00:00:01.089,00:00:00.14,00:00:03.37,8,202,open door,open,3,door,8,[\'door\'],[8]\n')
    verbs = _write(tmp_path / "verbs.csv", "id,key,instances,category\n" + "".join(f"{i},v{i},[],c\n" for i in range(4)))
    nouns = _write(tmp_path / "nouns.csv", "id,key,instances,category\n" + "".join(f"{i},n{i},[],c\n" for i in range(9)))
    rows, lm = adapters.epic_kitchens(ann, verbs, nouns, root=tmp_path)
    (r,) = rows
    assert r.id == "P01_01_0" and r.path == str(tmp_path / "P01/videos/P01_01.MP4")
    assert (r.start, r.end) == pytest.approx((0.14, 3.37))
    assert lm.encode(r.labels) == {"verb": 3, "noun": 8}
    assert lm.head_sizes() == {"verb": 4, "noun": 9}


def test_esc50_adapter(tmp_path):
    f = _write(tmp_path / "esc50.csv", "filename,fold,target,category,esc10,src_file,take\n"
               "1-100032-A-0.wav,1,0,dog,True,100032,A\n1-100038-A-14.wav,2,1,chirping_birds,False,100038,A\n")
    rows, lm = adapters.esc50(f, root=tmp_path, folds=[2])
    assert [r.id for r in rows] == ["1-100038-A-14"] and rows[0].path == str(tmp_path / "audio" / "1-100038-A-14.wav")
    assert lm.encode(rows[0].labels) == 1


def test_esc50_wav_end_to_end(tmp_path, small_cfg):
    """ESC-50 annotations -> rows -> dataset: a 44.1 kHz WAV decodes as audio-only."""
    from helpers.media import make_media

    from avfusion.data.datasets import VideoDataset, collate

    (tmp_path / "audio").mkdir()
    make_media(tmp_path / "audio" / "1-100032-A-0.wav", duration=1.2, video=False, acodec="pcm_s16le", layout="mono")
    meta = _write(tmp_path / "esc50.csv", "filename,fold,target,category,esc10,src_file,take\n"
                  "1-100032-A-0.wav,1,0,dog,True,100032,A\n")
    rows, lm = adapters.esc50(meta, root=tmp_path)
    s = VideoDataset(rows, lm, small_cfg, train=True, seed=0)[0]
    assert s["has_video"] is False and "video" not in s
    assert s["audio"].shape == (100, 128) and s["label"] == 0
    batch = collate([s])
    assert "video" not in batch and batch["label"].tolist() == [0]


# -- malformed manifests and label maps: every line named, nothing lost ---------------------------


def test_bom_and_crlf_keep_the_id_column(tmp_path):
    m = tmp_path / "excel.csv"
    m.write_bytes("id,path,labels\r\nmy_id,a.mp4,Dog\r\n".encode("utf-8-sig"))  # what Excel writes
    (r,) = read_manifest(m)
    assert r.id == "my_id" and r.labels == ["Dog"] and r.line == 2
    j = tmp_path / "bom.jsonl"
    j.write_bytes(b"\xef\xbb\xbf" + b'{"id": "x", "path": "a.mp4"}\r\n\r\n{"id": "y", "path": "b.mp4"}\r\n')
    assert [(r.id, r.line) for r in read_manifest(j)] == [("x", 1), ("y", 3)]


def test_every_malformed_line_is_named(tmp_path):
    from avfusion.data.manifest import check_manifest

    m = tmp_path / "m.csv"
    m.write_text("id,path,start,end,labels\n"
                 "ok1,a.mp4,,,Dog\n"          # 2
                 "nan,a.mp4,nan,,Dog\n"       # 3
                 "inf,a.mp4,0,inf,Dog\n"      # 4
                 "neg,a.mp4,-1,,Dog\n"        # 5
                 "short,a.mp4\n"              # 6
                 "long,a.mp4,,,Dog,extra\n"   # 7
                 "nopath,,,,Dog\n"            # 8
                 "back,a.mp4,3,2,Dog\n"       # 9
                 "\n"                         # 10 (blank: skipped)
                 "ok2,b.mp4,1.5,,Cat\n")      # 11
    rows, problems = check_manifest(m)
    assert [(r.id, r.line) for r in rows] == [("ok1", 2), ("ok2", 11)]
    got = {p.line: p.reason for p in problems}
    assert got == {
        3: "start 'nan' is not a finite number",
        4: "end 'inf' is not a finite number",
        5: "negative start -1 (seconds count from the file's start)",
        6: "2 value(s) for the header's 5 column(s)",
        7: "6 value(s) for the header's 5 column(s)",
        8: "no 'path'",
        9: "end 2 <= start 3",
    }
    with pytest.raises(ManifestError, match=r"7 malformed row\(s\): line 3: start 'nan'"):
        read_manifest(m)


def test_jsonl_lines_that_are_not_objects(tmp_path):
    from avfusion.data.manifest import check_manifest

    j = tmp_path / "m.jsonl"
    j.write_text('{"path": "a.mp4"}\n["a.mp4"]\n"a.mp4"\n{"path": "b.mp4", "start": "x"}\n{bad json\n')
    rows, problems = check_manifest(j)
    assert [r.line for r in rows] == [1]
    reasons = {p.line: p.reason for p in problems}
    assert reasons[2] == "a row must be an object with a 'path', got list"
    assert reasons[3] == "a row must be an object with a 'path', got str"
    assert reasons[4] == "start 'x' is not a number"
    assert reasons[5].startswith("invalid JSON")


def test_not_utf8_and_bad_headers_are_refused_whole(tmp_path):
    m = tmp_path / "latin1.csv"
    m.write_bytes("id,path\ncaf\xe9,a.mp4\n".encode("latin-1"))
    with pytest.raises(ManifestError, match="not UTF-8 text"):
        read_manifest(m)
    m.write_text("path,path\na.mp4,b.mp4\n")
    with pytest.raises(ManifestError, match="repeats column"):
        read_manifest(m)


def test_headers_with_40k_columns_are_read_in_one_pass(tmp_path):
    """Header checks are linear in the number of columns (a repeated-name check by list.count, a
    column lookup by list.index, took 17-30 s at 40k columns)."""
    import time

    extra = [f"x{i}" for i in range(40_000)]
    m = tmp_path / "wide.csv"
    m.write_text(",".join(["id", "path", *extra, "labels"]) + "\n" + ",".join(["a", "a.mp4", *("1" * 40_000), "Dog"])
                 + "\n")
    lm = tmp_path / "wide_labels.csv"
    lm.write_text(",".join(["index", "mid", "display_name", *extra]) + "\n" + ",".join(["0", "/m/dog", "Dog",
                                                                                      *("1" * 40_000)]) + "\n")
    t = time.perf_counter()
    (row,) = read_manifest(m)
    labels = LabelMap.read(lm)
    assert time.perf_counter() - t < 5.0  # generous: about 0.1 s when linear
    assert (row.id, row.labels, len(row.extra)) == ("a", ["Dog"], 40_000) and labels.names == ["Dog"]
    m.write_text(",".join(["id", "path", *extra, "x7", "x39999"]) + "\n")
    with pytest.raises(ManifestError, match=r"repeats column\(s\) \['x39999', 'x7'\]"):
        read_manifest(m)


def test_label_map_problems_are_named_with_their_lines(tmp_path):
    lm = tmp_path / "labels.csv"
    lm.write_bytes("index,mid,display_name\r\n0,/m/a,A\r\n1,/m/b\r\nx,/m/c,C\r\n3,,D\r\n4,/m/a,A again\r\n".encode("utf-8-sig"))
    with pytest.raises(ManifestError) as e:
        LabelMap.read(lm)
    msg = str(e.value)
    assert "line 3: 2 value(s) for the header's 3 column(s)" in msg
    assert "line 4: index 'x' is not an integer" in msg and "line 5: empty mid" in msg
    assert "mid '/m/a' appears twice (indices 0 and 4)" in msg
    lm.write_bytes("index,mid,display_name\r\n0,/m/a,A\r\n1,/m/b,B\r\n".encode("utf-8-sig"))  # BOM + CRLF: fine
    assert LabelMap.read(lm).names == ["A", "B"]
    lm.write_text("index,mid,display_name\n0,/m/a,A\n2,/m/b,B\n")
    with pytest.raises(ManifestError, match="indices must be 0..n-1"):
        LabelMap.read(lm)


def test_validate_goes_on_past_bad_lines_and_names_duplicates_by_line(corpus, tmp_path, small_cfg):
    from avfusion.data.manifest import check_manifest
    from avfusion.data.validate import summary, validate_rows

    good = corpus.files["good_a"]
    m = tmp_path / "m.csv"
    m.write_text(f"id,path,start,labels\nA,{good},,Dog\nB,{good},nan,Dog\nA,{good},,Dog\nC,{good},0.5,Cat\n")
    rows, bad = check_manifest(m)
    probs = validate_rows(rows, LabelMap.read(corpus.labels), small_cfg, bad_lines=bad)
    errors = [(p.line, p.id, p.reason) for p in probs if p.severity == "error"]
    assert errors == [(3, "B", "start 'nan' is not a finite number"),
                      (4, "A", "duplicate id (first on line 2)")]
    s = summary(rows, probs, len(bad))
    assert s["rows"] == 4 and s["rows_with_errors"] == 2
