"""Live analysis: load a model, patch every head on your own prompt pair, look, save as a run."""

from __future__ import annotations

import common
import streamlit as st

from interp.analyses.attention import attention_pattern
from interp.core.errors import InterpError
from interp.io.config import allowed_metrics
from interp.io.live import live_patching, save_live_run
from interp.viz import dla_bar, layer_head_table
from interp.viz.workbench import attention_heatmap, clickable_head_map

common.page("Live analysis", ":material/bolt:")
st.title("Live analysis")


def _model_row() -> tuple[str, str]:
    """The model name and device inputs, the load button, and what is loaded."""
    m = st.columns([3, 1, 1])
    name = m[0].text_input("Model", value="smollm2-135m", key="live_model",
                           help=f"{', '.join(common.text_model_names())}, a local Hugging Face directory, or a hub id "
                                "'org/name' (needs a reachable hub)")
    device = m[1].selectbox("Device", common.available_devices(), key="live_device")
    m[2].markdown("&nbsp;")
    if m[2].button("Load model", key="live_load") and common.load_model_or_error(name, device) is not None:
        st.session_state["live_loaded"] = (name.strip(), device)
    loaded = st.session_state.get("live_loaded")
    model = common.load_model_or_error(*loaded) if loaded else None
    if model is not None:
        s = model.spec
        st.success(f"**{model.name}** on {model.device}: {s.n_layers} layers x {s.n_heads} heads "
                   f"({s.n_kv_heads} key/value heads), d_model {s.d_model}, {s.architecture}")
    return name, device


def _run_analysis(name: str, device: str, pair: tuple[str, str, str, str], metric: str) -> None:
    """Patch every head and run DLA on the pair; the result (or nothing) goes to the session."""
    model = common.load_model_or_error(name, device)
    if model is None:
        return
    st.session_state["live_loaded"] = (name.strip(), device)
    bar = st.progress(0.0, text="patching heads...")

    def progress(done: int, total: int) -> None:
        bar.progress(done / max(total, 1), text=f"patched {done} of {total} heads")

    try:
        result = live_patching(model, *pair, metric=metric, progress=progress)
    except InterpError as exc:
        bar.empty()
        st.error(f"Cannot run this pair: {exc}")
        st.session_state.pop("live_result", None)
    except Exception as exc:  # noqa: BLE001 - a message, never a traceback
        bar.empty()
        st.error(f"The analysis failed: {type(exc).__name__}: {exc}")
        st.session_state.pop("live_result", None)
    else:
        bar.progress(1.0, text=f"done in {result.duration_s:.1f} s")
        st.session_state["live_result"] = (result, (name.strip(), device))
        st.session_state.pop("live_saved", None)


def _save_row(result, res_model) -> None:
    s = st.columns([2, 1, 3])
    run_name = s[0].text_input("Run name", "live", key="live_run_name")
    s[1].markdown("&nbsp;")
    if s[1].button("Save as run", key="live_save"):
        with common.guard("Saving the run"):
            if res_model is None:
                raise InterpError("the model of this result is not loaded")
            run = save_live_run(result, common.store(), res_model, name=run_name.strip() or "live")
            st.session_state["live_saved"] = run.run_id
    saved = st.session_state.get("live_saved")
    if saved:
        s[2].success(f"Saved as run **{saved}** in `{common.runs_dir()}`")
        s[2].page_link("pages/1_Runs.py", label="Open it in Runs", icon=":material/list_alt:",
                       query_params={"run": saved})


def _results(result, res_model) -> None:
    pr = result.patching
    st.divider()
    st.subheader(f"Results on {result.model_name}")
    c = st.columns(4)
    c[0].metric(f"Clean {pr.metric}", f"{pr.clean_metric:.3f}")
    c[1].metric(f"Corrupt {pr.metric}", f"{pr.corrupt_metric:.3f}")
    c[2].metric("DLA check (max error)", f"{result.dla.max_abs_error:.1e}")
    c[3].metric("Took", f"{result.duration_s:.1f} s")
    with st.expander("Tokens of the pair"):
        st.dataframe(result.token_frame(), hide_index=True, width="stretch")

    frame = pr.to_frame()
    options = [common.head_label(r.layer, r.head) for r in frame.itertuples()]
    picker_key = "live_head"
    if st.session_state.get(picker_key) not in options:
        best = layer_head_table(frame, "normalised", 1).iloc[0]
        st.session_state[picker_key] = common.head_label(best["layer"], best["head"])

    map_col, side = st.columns([3, 1])
    with side:
        label = st.selectbox("Head", options, key=picker_key, help="Pick a head or click a cell of the map")
        layer, head = common.parse_head(label)
        st.markdown("**Top heads by patching**")
        top = pr.top(8)
        st.dataframe(top.assign(head=[common.head_label(r.layer, r.head) for r in top.itertuples()])
                     [["head", "normalised"]], hide_index=True, width="stretch")
    with map_col, common.guard("Drawing the patching map"):
        st.plotly_chart(clickable_head_map(frame, "normalised", title=f"Head patching ({pr.direction}, normalised)",
                                           selected=(layer, head)),
                        key="live_chart", on_select=common.on_head_click("live_chart", picker_key, options),
                        selection_mode=("points", "box"), width="stretch")

    d1, d2 = st.columns(2)
    with d1, common.guard("Drawing the DLA"):
        st.plotly_chart(dla_bar(result.dla.to_frame(), top_k=15, title="Direct logit attribution (top 15)"),
                        width="stretch", key="live_dla")
    with d2, common.guard("Showing the attention pattern"):
        which = st.radio("Attention on", ["clean", "corrupt"], horizontal=True, key="live_which")
        if res_model is not None:
            text = result.pair.clean if which == "clean" else result.pair.corrupt
            att = attention_pattern(res_model, text, layer, head)
            st.plotly_chart(attention_heatmap(att.to_frame(), title=f"{label} on the {which} prompt"),
                            width="stretch", key="live_attention")


def main() -> None:
    st.caption("Head patching (each head's output, clean into corrupt) and direct logit attribution on "
               "one prompt pair. The model is loaded once and cached.")

    # --- model ------------------------------------------------------------------------------------------
    name, device = _model_row()

    # --- prompts -----------------------------------------------------------------------------------------
    p = st.columns(2)
    clean = p[0].text_input("Clean prompt", "When Mary and John went to the store, John gave a drink to",
                            key="live_clean")
    corrupt = p[1].text_input("Corrupt prompt (same number of tokens)",
                              "When Alice and Bob went to the store, Carl gave a drink to", key="live_corrupt")
    q = st.columns(3)
    answer = q[0].text_input("Answer token", " Mary", key="live_answer",
                             help="one token; a leading space usually matters")
    distractor = q[1].text_input("Distractor token", " John", key="live_distractor")
    metrics = allowed_metrics()
    metric = q[2].selectbox("Metric", metrics, index=metrics.index("logit_diff") if "logit_diff" in metrics else 0,
                            key="live_metric")

    if st.button("Run head patching + DLA", type="primary", key="live_run"):
        _run_analysis(name, device, (clean, corrupt, answer, distractor), metric)

    # --- results -------------------------------------------------------------------------------------------
    stored = st.session_state.get("live_result")
    if stored is None:
        st.stop()
    result, model_key = stored
    res_model = common.load_model_or_error(*model_key)
    _results(result, res_model)
    _save_row(result, res_model)


with common.guard("This page"):
    main()
