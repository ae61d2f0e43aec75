"""Home: what the studio does and the three steps from data to a classifier you can show."""

import streamlit as st

st.title("Image-classification studio")
st.markdown(
    "Bring a folder of images, look at it, clean it, train a ResNet or MobileNet classifier on it, watch it "
    "learn, then drop a photo on the page and see what the model sees. No code needed; everything here can "
    "also be scripted with `python -m core`."
)
st.info("A real dataset is built in: **1,797 handwritten digits** (scikit-learn). It is chosen already, so "
        "every page works from the first click.", icon=":material/lightbulb:")  # fmt: skip

steps = st.columns(3)
with steps[0]:
    st.subheader("1. Pick data")
    st.markdown("A folder per class, a CSV of labels, JSON metadata per image, or a ZIP of any of them. "
                "See class balance, sizes, broken files and a 2-D map of the images.")  # fmt: skip
    st.page_link("app_pages/datasets.py", label="Open Datasets", icon=":material/photo_library:")
with steps[1]:
    st.subheader("2. Train")
    st.markdown("Choose a model and a recipe, start a run in the background, and watch loss and accuracy "
                "curves update while you keep working.")  # fmt: skip
    st.page_link("app_pages/train.py", label="Open Train", icon=":material/model_training:")
with steps[2]:
    st.subheader("3. Classify")
    st.markdown("Drag photos onto the page: top-5 classes with probabilities, the time taken, and a heat "
                "map of where the model looked.")  # fmt: skip
    st.page_link("app_pages/classify.py", label="Open Classify", icon=":material/image_search:")
