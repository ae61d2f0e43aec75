"""Image-classification studio: the entry point. ``streamlit run app.py [-- --workspace DIR]``.

Lists every page explicitly (``st.navigation``), and shows the workspace and the chosen dataset in the
sidebar of every page.
"""

import streamlit as st

from ui.state import current_name, workspace
from ui.text import plain

st.set_page_config(page_title="Image studio", page_icon=":material/photo_camera:", layout="wide")

PAGES = {
    "Start": [st.Page("app_pages/home.py", title="Home", icon=":material/home:", default=True)],
    "Data": [
        st.Page("app_pages/datasets.py", title="Datasets", icon=":material/photo_library:"),
        st.Page("app_pages/duplicates.py", title="Duplicates", icon=":material/content_copy:"),
    ],
    "Model": [
        st.Page("app_pages/train.py", title="Train", icon=":material/model_training:"),
        st.Page("app_pages/runs.py", title="Runs", icon=":material/monitoring:"),
        st.Page("app_pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
        st.Page("app_pages/search.py", title="Search", icon=":material/travel_explore:"),
        st.Page("app_pages/classify.py", title="Classify", icon=":material/image_search:"),
        st.Page("app_pages/evaluate.py", title="Evaluate", icon=":material/fact_check:"),
    ],
    "Performance": [st.Page("app_pages/scaling.py", title="Scaling", icon=":material/speed:")],
}

page = st.navigation(PAGES)
with st.sidebar:
    st.caption(f"Dataset: **{plain(current_name())}**")  # a folder's name: text, never Markdown
    st.caption(f"Workspace: `{workspace().root.name}`")  # its name only: the server's folders are not for the audience
page.run()
