// The phone camera, drag-and-drop onto the upload zone, auto-submit on choice, confirm before delete,
// filter on change. The pages work without it (plain forms).
(function () {
  const drop = document.getElementById("drop");
  const input = document.getElementById("file");
  const form = document.getElementById("upload-form");
  const tooBig = (file) => {
    // A browser still sending a large file often shows "connection reset" instead of the
    // server's 413 page, so say it here before uploading.
    const max = Number(form.dataset.maxBytes || 0);
    if (!max || file.size <= max) return false;
    const box = document.getElementById("client-error");
    box.textContent = `${file.name} is larger than ${(max / 1048576).toFixed(0)} MB: choose a smaller photo.`;
    box.hidden = false;
    return true;
  };
  const send = () => { if (input.files.length && !tooBig(input.files[0])) form.submit(); };
  const camera = document.getElementById("camera");
  if (camera && input) {
    // The camera's photo goes through the one named input, so the form posts a single "file".
    camera.addEventListener("change", () => { if (camera.files.length) { input.files = camera.files; send(); } });
  }
  if (drop && input && form) {
    input.addEventListener("change", send);
    ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => {
      e.preventDefault(); drop.classList.add("over");
    }));
    ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, () => drop.classList.remove("over")));
    drop.addEventListener("drop", (e) => {
      e.preventDefault();
      if (e.dataTransfer.files.length) { input.files = e.dataTransfer.files; send(); }
    });
  }
  document.querySelectorAll("form[data-confirm]").forEach((f) => f.addEventListener("submit", (e) => {
    if (!window.confirm(f.dataset.confirm)) e.preventDefault();
  }));
  document.querySelectorAll("select[data-autosubmit]").forEach((s) => s.addEventListener("change", () => s.form.submit()));
})();
