"""Head maps: a run's per-head results as layer x head maps; a selected head's details."""

from __future__ import annotations

import common
import streamlit as st

from interp.analyses.attention import attention_pattern
from interp.io.atlas import head_dla, head_score_difference, run_head_scores
from interp.viz import layer_head_table
from interp.viz.workbench import attention_heatmap, clickable_head_map

common.page("Head maps", ":material/grid_on:")
st.title("Head maps")


def _second_result(runs, run_id: str, model_id, score: str):
    """The optional second result: (its frame, its label, the display mode), or three Nones."""
    same_model = runs[(runs["model"] == model_id) & (runs["status"] != "unreadable")]
    c = st.columns([2, 2, 1])
    with c[0]:
        ids = same_model["run_id"].tolist() or [run_id]
        run_b_id = st.selectbox("Second run (same model)", ids, index=ids.index(run_id) if run_id in ids else 0,
                                key="hm_run_b")
    opened_b = common.open_run(run_b_id)
    if opened_b is None:
        return None, None, None
    scores_b = run_head_scores(*opened_b)
    names_b = list(dict.fromkeys(scores_b["score"]))
    if not names_b:
        st.warning(f"Run {run_b_id} has no per-head results to compare with.")
        return None, None, None
    others = [n for n in names_b if not (run_b_id == run_id and n == score)] or names_b
    with c[1]:
        score_b = st.selectbox("Second result", others, key=f"hm_score_b_{run_b_id}")
    with c[2]:
        mode = st.radio("Show", ["Side by side", "Difference A - B"], key="hm_mode")
    return scores_b[scores_b["score"] == score_b].reset_index(drop=True), f"{score_b} ({run_b_id})", mode


def _head_side(frame, score: str, options: list[str], picker_key: str) -> str:
    """The head picker, the head's value and the top heads; returns the picked head's label."""
    label = st.selectbox("Head", options, key=picker_key,
                         help="Pick a head here or click a cell of the map. Preset: the head "
                              "with the largest |value|.")
    layer, head = common.parse_head(label)
    value = frame[(frame["layer"] == layer) & (frame["head"] == head)]["value"]
    if len(value):
        st.metric(f"{label} · {score}", f"{float(value.iloc[0]):+.4g}")
    st.markdown("**Top heads**")
    top_heads = layer_head_table(frame, "value", 8)
    st.dataframe(top_heads.assign(head_label=[common.head_label(r.layer, r.head) for r in top_heads.itertuples()])
                 [["head_label", "value"]], hide_index=True, width="stretch")
    return label


def _draw_maps(frame, score: str, run_id: str, second, sel, chart_key: str, on_click, on_click_b) -> None:
    frame_b, label_b, mode = second
    if frame_b is None:
        st.plotly_chart(clickable_head_map(frame, "value", title=f"{score} · {run_id}", selected=sel),
                        key=chart_key, on_select=on_click, selection_mode=("points", "box"), width="stretch")
    elif mode == "Side by side":
        a, b = st.columns(2)
        a.plotly_chart(clickable_head_map(frame, "value", title=f"A: {score}", selected=sel),
                       key=chart_key, on_select=on_click, selection_mode=("points", "box"), width="stretch")
        b.plotly_chart(clickable_head_map(frame_b, "value", title=f"B: {label_b}", selected=sel),
                       key=chart_key + "_b", on_select=on_click_b, selection_mode=("points", "box"), width="stretch")
    else:
        diff = head_score_difference(frame, frame_b)
        st.plotly_chart(clickable_head_map(diff, "value", title=f"A - B: {score} minus {label_b}", selected=sel),
                        key=chart_key, on_select=on_click, selection_mode=("points", "box"), width="stretch")
        st.caption("Scores of different analyses live on different scales; a difference is most "
                   "meaningful between runs of the same analysis.")


def _head_atlas(model_id, layer: int, head: int) -> None:
    atlas = common.atlas()
    if atlas is None or model_id not in atlas.models:
        st.info(f"No complete run of {model_id} is in the atlas yet.")
        return
    prof = atlas.head_scores(layer, head, model=model_id)
    if prof.empty:
        st.info("The atlas has no score for this head.")
        return
    st.dataframe(prof, hide_index=True, width="stretch",
                 column_config={"value": st.column_config.NumberColumn(format="%.4g"),
                                "percentile": st.column_config.NumberColumn(format="%.0f")})
    st.caption("rank 1 = largest |value| among the model's heads; each score from the newest "
               "complete run that has it (see the Atlas page for provenance).")


def _head_dla(run, layer: int, head: int) -> None:
    dla = head_dla(run, layer, head)
    if dla is None:
        st.info("This run has no DLA table for this head.")
        return
    m = st.columns(2)
    m[0].metric("Mean contribution", f"{dla.contribution:+.4g}", help="to logit(answer) - logit(distractor)")
    m[1].metric("Rank by |DLA|", f"{dla.rank} of {dla.n_heads}")
    if not dla.per_prompt.empty:
        st.bar_chart(dla.per_prompt, x="prompt", y="contribution", height=200)


def _prompt_and_device(run, run_id: str) -> tuple[str, str]:
    dataset = common.read_table(run, "dataset", quiet=True)
    prompts: list[str] = []
    pc = st.columns([3, 1, 1])
    if dataset is not None and "clean" in dataset.columns:
        which = pc[1].radio("Version", ["clean", "corrupt"], key="hm_which", horizontal=True) \
            if "corrupt" in dataset.columns else "clean"
        prompts = dataset[which].astype(str).tolist()
    device = pc[2].selectbox("Device", common.available_devices(), key="hm_device")
    if prompts:
        idx = pc[0].selectbox("Prompt", range(len(prompts)), format_func=lambda i: f"{i}: {prompts[i]}",
                              key=f"hm_prompt_{run_id}")
        return prompts[idx], device
    text = pc[0].text_input("Prompt (this run stores no prompts)", key="hm_text",
                            value="When Mary and John went to the store, John gave a drink to")
    return text, device


def _attention(run, manifest: dict, run_id: str, label: str) -> None:
    layer, head = common.parse_head(label)
    model_id = manifest.get("model_id")
    text, device = _prompt_and_device(run, run_id)
    if not isinstance(model_id, str):
        st.error("The run's manifest names no model, so its attention patterns cannot be computed.")
        return
    model = common.load_model_or_error(model_id, device, int(manifest.get("seed") or 0))
    if model is None:
        return
    sha = manifest.get("weights_sha256")
    if isinstance(sha, str) and model.weights_sha256 and sha != model.weights_sha256:
        st.warning(f"The weights loaded for {model_id} differ from the run's (sha256 "
                   f"{model.weights_sha256[:12]}... vs {sha[:12]}...).")
    res = attention_pattern(model, text, layer, head)
    top_keys = res.top_keys(-1, 3)
    st.caption("From the last token, " + label + " attends most to " +
               ", ".join(f"{t.token!r} (pos {t.key}, {t.weight:.2f})" for t in top_keys.itertuples()))
    st.plotly_chart(attention_heatmap(res.to_frame(), title=f"{label} attention on {model_id}"),
                    width="stretch", key="hm_attention")


def _run_scores(run, manifest: dict, run_id: str):
    notes: list[str] = []
    scores = run_head_scores(run, manifest, notes=notes)
    for note in notes:
        st.warning(note)
    if scores.empty:
        st.info(f"Run {run_id} has no per-head results (tables head_patching, dla or head_scores). "
                "Pick another run, or run an experiment with head patching enabled.")
        st.stop()
    return scores


def main() -> None:
    runs = common.list_runs()
    if runs.empty:
        common.no_runs_message()
        st.stop()

    top = st.columns([2, 2, 1])
    with top[0]:
        run_id = common.run_picker(runs, "hm_run", help="Runs of the store, newest first")
    opened = common.open_run(run_id) if run_id else None
    if opened is None:
        st.stop()
    run, manifest = opened
    model_id = manifest.get("model_id")
    scores = _run_scores(run, manifest, run_id)

    names = list(dict.fromkeys(scores["score"]))
    with top[1]:
        score = st.selectbox("Result", names, key=f"hm_score_{run_id}",
                             help="patching.<task>.<direction>.<metric>: normalised patching effect "
                                  "(1 = the head alone restores clean behaviour); dla.<task>: direct "
                                  "logit attribution; other names come from head-score analyses")
    with top[2]:
        compare = st.toggle("Compare", key="hm_compare", help="A second result side by side or as a difference")
    frame = scores[scores["score"] == score].reset_index(drop=True)

    # --- the second result (optional) -------------------------------------------------------------
    second = _second_result(runs, run_id, model_id, score) if compare else (None, None, None)

    # --- head picker (drawn before the map in the script, shown right of it) ------------------------
    options = [common.head_label(r.layer, r.head) for r in frame.sort_values(["layer", "head"]).itertuples()]
    picker_key = f"hm_head_{run_id}"
    chart_key = f"hm_chart_{run_id}_{score}"
    on_click = common.on_head_click(chart_key, picker_key, options)
    on_click_b = common.on_head_click(chart_key + "_b", picker_key, options)
    if st.session_state.get(picker_key) not in options:
        best = layer_head_table(frame, "value", 1).iloc[0]
        st.session_state[picker_key] = common.head_label(best["layer"], best["head"])

    map_col, side = st.columns([3, 1])
    with side:
        label = _head_side(frame, score, options, picker_key)
    layer, head = common.parse_head(label)
    with map_col, common.guard("Drawing the head map"):
        _draw_maps(frame, score, run_id, second, (layer, head), chart_key, on_click, on_click_b)

    # --- the selected head ------------------------------------------------------------------------------
    st.divider()
    st.subheader(f"Head {label}")
    c_scores, c_dla = st.columns(2)
    with c_scores:
        st.markdown("**Scores across all analyses** (head atlas)")
        with common.guard("Reading the atlas"):
            _head_atlas(model_id, layer, head)
    with c_dla:
        st.markdown("**Direct logit attribution** (this run)")
        with common.guard("Reading the DLA"):
            _head_dla(run, layer, head)

    st.markdown("**Attention pattern** on the run's prompts")
    with common.guard("Showing the attention pattern"):
        _attention(run, manifest, run_id, label)


with common.guard("This page"):
    main()
