"""Keep and drop lists for the Synopsis bundle, imported by synopsis.spec at build time.

Synopsis imports only QtCore, QtGui and QtWidgets, loads models through
``AutoModelForSeq2SeqLM`` and runs torch on the CPU (or CUDA in the CUDA
variant). Everything the PyInstaller hooks collect beyond that is dropped
here. tests/ has no test for this file: packaging/smoke_test.py runs the
frozen result, which is the check that matters.
"""

from __future__ import annotations

import fnmatch
import plistlib
import re
from pathlib import Path

# Modules that no Synopsis code path imports. Checked by running the CLI and
# the window with each of them made unimportable (packaging/smoke_test.py runs
# the frozen result). sympy and torch._dynamo must stay, because
# transformers' PreTrainedModel imports them through torch.
NEVER_USED_MODULES = [
    "tkinter",
    "IPython",
    "matplotlib",
    "pytest",
    "pytest_qt",
    "tensorboard",
    "torchvision",
    "torchaudio",
]

EXCLUDED_MODULES = NEVER_USED_MODULES + [
    # Qt modules beyond QtCore, QtGui and QtWidgets. The Qt libraries that the
    # kept plugins link against (QtSvg for SVG icons, QtDBus for the Linux
    # platform theme) are still collected, as binaries, by dependency analysis.
    "PySide6.QtWebEngineCore",
    "PySide6.QtWebEngineWidgets",
    "PySide6.QtWebEngineQuick",
    "PySide6.QtWebChannel",
    "PySide6.QtWebSockets",
    "PySide6.QtQml",
    "PySide6.QtQuick",
    "PySide6.QtQuick3D",
    "PySide6.QtQuickWidgets",
    "PySide6.QtQuickControls2",
    "PySide6.Qt3DCore",
    "PySide6.Qt3DRender",
    "PySide6.Qt3DInput",
    "PySide6.Qt3DLogic",
    "PySide6.Qt3DAnimation",
    "PySide6.Qt3DExtras",
    "PySide6.QtMultimedia",
    "PySide6.QtMultimediaWidgets",
    "PySide6.QtSpatialAudio",
    "PySide6.QtPdf",
    "PySide6.QtPdfWidgets",
    "PySide6.QtCharts",
    "PySide6.QtGraphs",
    "PySide6.QtDataVisualization",
    "PySide6.QtNetwork",
    "PySide6.QtNetworkAuth",
    "PySide6.QtOpenGL",
    "PySide6.QtOpenGLWidgets",
    "PySide6.QtSql",
    "PySide6.QtTest",
    "PySide6.QtBluetooth",
    "PySide6.QtNfc",
    "PySide6.QtPositioning",
    "PySide6.QtLocation",
    "PySide6.QtSensors",
    "PySide6.QtSerialPort",
    "PySide6.QtSerialBus",
    "PySide6.QtRemoteObjects",
    "PySide6.QtScxml",
    "PySide6.QtStateMachine",
    "PySide6.QtTextToSpeech",
    "PySide6.QtDesigner",
    "PySide6.QtHelp",
    "PySide6.QtUiTools",
    "PySide6.QtXml",
    "PySide6.QtSvg",
    "PySide6.QtSvgWidgets",
    "PySide6.QtConcurrent",
    "PySide6.QtPrintSupport",
    "PySide6.QtHttpServer",
    # Python packages that only optional paths of torch and transformers
    # import: graph tools of torch.fx passes, chat templates, image inputs
    # (pypdfium2 needs Pillow only to render pages as images).
    "networkx",
    "jinja2",
    "pdfplumber",
    "PIL",
    "scipy",
    "pandas",
    "sklearn",
    "onnx",
    "onnxruntime",
]

# Files the hooks collect that no run-time path opens. Patterns match the
# destination path inside the bundle, with "/" separators on every system.
DROPPED_FILES = [
    # C++ headers, CMake files and static libraries, used only to build torch extensions.
    "torch/include/*",
    "torch/share/*",
    "torch/lib/*.a",
    "torch/lib/*.lib",
    # torch's C++ test programs and test libraries; torch_shm_manager stays
    # because tensors shared between processes need it.
    "torch/test/*",
    "torch/bin/test_*",
    "torch/bin/*Test",
    "torch/bin/protoc*",
    "torch/bin/*.pt",
    "torch/bin/*.ptl",
    "torch/bin/upgrader_models*",
    "torch/lib/libjitbackend_test*",
    "torch/lib/libbackend_with_compiler*",
    "torch/lib/libtorchbind_test*",
    "torch/lib/libaoti_custom_ops*",
    "torch/lib/jitbackend_test*",
    "torch/lib/backend_with_compiler*",
    "torch/lib/torchbind_test*",
    "torch/lib/aoti_custom_ops*",
    # Qt's translations of its own dialogs: the qtbase ones are kept, the
    # catalogs of modules Synopsis does not use are not.
    "PySide6/Qt/translations/qtwebengine*",
    "PySide6/Qt/translations/qtmultimedia*",
    "PySide6/Qt/translations/qtdeclarative*",
    "PySide6/Qt/translations/qtconnectivity*",
    "PySide6/Qt/translations/qtlocation*",
    "PySide6/Qt/translations/qtserialport*",
    "PySide6/Qt/translations/qtwebsockets*",
    "PySide6/Qt/translations/designer*",
    "PySide6/Qt/translations/linguist*",
    "PySide6/Qt/translations/assistant*",
    "PySide6/Qt/translations/qt_help*",
    "PySide6/translations/qtwebengine*",
    "PySide6/translations/qtmultimedia*",
    "PySide6/translations/qtdeclarative*",
    "PySide6/translations/qtconnectivity*",
    "PySide6/translations/qtlocation*",
    "PySide6/translations/qtserialport*",
    "PySide6/translations/qtwebsockets*",
    "PySide6/translations/designer*",
    "PySide6/translations/linguist*",
    "PySide6/translations/assistant*",
    "PySide6/translations/qt_help*",
    # Qt plugins for embedded displays, remote displays, touch input and the
    # virtual keyboard, and the PDF image format. They pull in QtQuick, QtQml,
    # QtPdf and QtNetwork (about 25 MB on Linux), which nothing else in the bundle uses.
    "PySide6/Qt/plugins/imageformats/libqpdf*",
    "PySide6/Qt/plugins/platforminputcontexts/libqtvirtualkeyboard*",
    "PySide6/Qt/plugins/generic/libqtuiotouch*",
    "PySide6/Qt/plugins/platforms/libqvnc*",
    "PySide6/Qt/plugins/platforms/libqeglfs*",
    "PySide6/Qt/plugins/platforms/libqlinuxfb*",
    "PySide6/Qt/plugins/platforms/libqvkkhrdisplay*",
    "PySide6/Qt/plugins/platforms/libqminimalegl*",
    "PySide6/Qt/plugins/egldeviceintegrations/*",
    "PySide6/Qt/lib/libQt6Pdf.*",
    "PySide6/Qt/lib/libQt6Qml*",
    "PySide6/Qt/lib/libQt6Quick*",
    "PySide6/Qt/lib/libQt6VirtualKeyboard*",
    "PySide6/Qt/lib/libQt6Network.*",
    "PySide6/Qt/lib/libQt6EglFS*",
    "PySide6/Qt/lib/libQt6EglFs*",
    # Model conversion scripts and the sources that generate modeling files.
    "transformers/models/*/convert_*",
    "transformers/models/*/modular_*",
]

# The CPU variant must not carry CUDA libraries: a CUDA wheel of torch
# installed by mistake would otherwise bring its NVIDIA libraries along.
CUDA_FILES = [
    "nvidia/*",
    "torch/lib/libtorch_cuda*",
    "torch/lib/libc10_cuda*",
    "torch/lib/libcudnn*",
    "torch/lib/libnccl*",
    "torch/lib/torch_cuda*",
    "torch/lib/c10_cuda*",
    "torch/lib/cudnn*",
    "torch/lib/cublas*",
    "triton/*",
]

# Speech and audio families in AutoModelForSeq2SeqLM's mapping. Synopsis feeds
# them text, so their modeling modules are left out. Their configuration and
# tokenizer modules stay, so the model manager can read their config.json.
# NOTE: loading one of these models in the bundle fails with transformers'
# import error instead of a Synopsis message.
SPEECH_FAMILIES_PATTERN = re.compile(r"(audio|asr|speech|transcribe|voxtral|flamingo|seamless)")


def _matches(destination: str, patterns: list[str]) -> bool:
    path = destination.replace("\\", "/")
    return any(fnmatch.fnmatch(path, pattern) for pattern in patterns)


def drop_unused(toc: list, torch_variant: str = "cpu") -> list:
    """Return ``toc`` (PyInstaller's list of (destination, source, kind)) without the files Synopsis never opens."""
    patterns = DROPPED_FILES + (CUDA_FILES if torch_variant == "cpu" else [])
    return [entry for entry in toc if not _matches(entry[0], patterns)]


def seq2seq_families() -> set[str]:
    """Return the transformers.models folders of every text model that AutoModelForSeq2SeqLM loads."""
    from transformers.models.auto.configuration_auto import model_type_to_module_name
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES

    folders = {model_type_to_module_name(model_type) for model_type in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES}
    return {folder for folder in folders if not SPEECH_FAMILIES_PATTERN.search(folder)}


KEPT_PREFIXES = ("configuration_", "tokenization_")
DROPPED_PREFIXES = ("convert_", "modular_")
# "from ..bart.modeling_bart import X" inside a model folder, or the same import spelled absolutely.
MODEL_IMPORT = re.compile(r"^\s*from (?:\.\.|\.\.\.models\.|transformers\.models\.)(\w+)\.(\w+) import", re.MULTILINE)


def _transformers_models_folder() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("transformers")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("transformers is not installed in the build environment")
    return Path(spec.origin).parent / "models"


def _model_modules(models: Path) -> dict[str, Path]:
    """Map each module name under transformers.models (packages' __init__ left out) to its file."""
    modules = {}
    for path in sorted(models.rglob("*.py")):
        parts = path.relative_to(models).with_suffix("").parts
        if len(parts) >= 2 and parts[-1] != "__init__":
            modules["transformers.models." + ".".join(parts)] = path
    return modules


def kept_model_modules(models: Path | None = None) -> set[str]:
    """Return the transformers.models modules the slim bundle keeps.

    These are every configuration and tokenizer module, every module of the
    encoder-decoder text families, and, repeated until nothing is added, every
    model module that a kept one imports from another family by a relative or
    absolute ``from ... import``.
    """
    models = models or _transformers_models_folder()
    modules = _model_modules(models)
    families = seq2seq_families() | {"auto", "encoder_decoder"}
    kept = set()
    for name in modules:
        family, leaf = name.split(".")[2], name.split(".")[-1]
        if leaf.startswith(DROPPED_PREFIXES):
            continue
        if family in families or leaf.startswith(KEPT_PREFIXES):
            kept.add(name)
    pending = list(kept)
    while pending:
        source = modules[pending.pop()].read_text(encoding="utf-8")
        for family, leaf in MODEL_IMPORT.findall(source):
            name = f"transformers.models.{family}.{leaf}"
            if name in modules and name not in kept:
                kept.add(name)
                pending.append(name)
    return kept


def transformers_modules(slim: bool = True) -> list[str]:
    """Return the transformers modules to bundle as hidden imports.

    transformers' top-level package and its model packages are lazy: a class
    is imported when first named, so PyInstaller's import tracing does not
    see the modules that AutoConfig, AutoTokenizer and AutoModelForSeq2SeqLM
    load by name.
    """
    from PyInstaller.utils.hooks import collect_submodules

    if not slim:
        return collect_submodules("transformers", on_error="ignore")
    kept = kept_model_modules()

    def keep(name: str) -> bool:
        if name.startswith(("transformers.commands", "transformers.cli")):
            return False
        parts = name.split(".")
        if len(parts) < 4 or parts[1] != "models":
            return True  # transformers itself, transformers.models and each family's package
        return name in kept or any(module.startswith(name + ".") for module in kept)

    return collect_submodules("transformers", filter=keep, on_error="ignore")


def transformers_excludes() -> list[str]:
    """Return the transformers.models modules to leave out of the slim bundle.

    Hidden imports alone cannot slim transformers: its package files import
    every model under ``if TYPE_CHECKING:``, and PyInstaller follows those
    imports too, which would bundle all 566 model folders of transformers 5.25.
    """
    models = _transformers_models_folder()
    kept = kept_model_modules(models)
    return sorted(name for name in _model_modules(models) if name not in kept)


def icon_for_platform(root: Path) -> str:
    """Return the icon for the executables; PyInstaller converts the PNG to .ico or .icns (it needs Pillow)."""
    return str(root / "resources" / "synopsis.png")


def project_version(root: Path) -> str:
    """Return the version written in engine/__init__.py."""
    text = (root / "engine" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"', text, re.MULTILINE)
    if match is None:
        raise ValueError(f"no __version__ = \"...\" line in {root / 'engine' / '__init__.py'}")
    return match.group(1)


def macos_info_plist(spec_dir: Path, root: Path) -> dict:
    """Return the Info.plist entries for Synopsis.app: packaging/macos/Info.plist plus the version."""
    with open(spec_dir / "macos" / "Info.plist", "rb") as stream:
        entries = plistlib.load(stream)
    version = project_version(root)
    entries["CFBundleShortVersionString"] = version
    entries["CFBundleVersion"] = version
    return entries
