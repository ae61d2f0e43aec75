"""Home: what the studio does and the four steps from a folder of images to a classifier you can show."""

import streamlit as st

st.title("Image-classification studio")
st.markdown(
    "Bring a folder of images, look at it, find its copies and mislabelled files, train a classifier on it, "
    "watch it learn, then drop a photo on the page and see what the model sees. No code needed."
)
st.info("A real dataset is built in: **1,797 handwritten digits** (scikit-learn). It is chosen already, so "
        "every page works from the first click.", icon=":material/lightbulb:")  # fmt: skip

STEPS = [
    ("1. Look at the data", "A folder per class, a CSV of labels, JSON metadata per image, a ZIP of any of them, or "
     "a plain folder of photos. See the class balance, sizes, broken files and a 2-D map of the images.",
     "app_pages/datasets.py", "Open Datasets", ":material/photo_library:"),
    ("2. Find copies", "Exact and near copies, the same picture under two labels, and test photos that also sit "
     "in the training set (they make scores look better than they are). Write a cleaned copy in one click.",
     "app_pages/duplicates.py", "Open Duplicates", ":material/content_copy:"),
    ("3. Train", "The defaults work: a small network for small images like the digits, a ResNet for photos, as "
     "long as the data needs. Curves update while it trains in the background.",
     "app_pages/train.py", "Open Train", ":material/model_training:"),
    ("4. Classify", "Drop photos or take one with the webcam: the five most likely classes with their "
     "probabilities, the time it took, and a heat map of where the model looked.",
     "app_pages/classify.py", "Open Classify", ":material/image_search:"),
]  # fmt: skip

for column, (title, text, page, label, icon) in zip(st.columns(len(STEPS)), STEPS, strict=True):
    with column:
        st.subheader(title)
        st.markdown(text)
        st.page_link(page, label=label, icon=icon)

st.divider()
st.markdown("**And then**")
more = st.columns(4)
more[0].page_link("app_pages/runs.py", label="Runs: curves while they train", icon=":material/monitoring:")
more[1].page_link(
    "app_pages/evaluate.py", label="Evaluate: how good a model is, a report", icon=":material/fact_check:"
)
more[2].page_link("app_pages/compare.py", label="Compare and search settings", icon=":material/compare_arrows:")
more[3].page_link("app_pages/scaling.py", label="Scaling: more cores, more machines", icon=":material/speed:")
