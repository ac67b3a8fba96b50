<#
.SYNOPSIS
Builds the Windows bundle (dist\synopsis\) and its NSIS installer
(dist\Synopsis-VERSION-windows-x64-setup.exe) from a clean checkout.

.DESCRIPTION
Creates a private virtual environment under build\venv-windows (reused when
it exists), installs torch first from PyTorch's index for the chosen build,
then Synopsis and PyInstaller, freezes with packaging\synopsis.spec, and
runs makensis on packaging\windows\synopsis.nsi. Needs Python 3.10 to 3.13
(64-bit) and NSIS 3 (makensis on PATH or in its default folder).

.EXAMPLE
powershell -ExecutionPolicy Bypass -File packaging\build-windows.ps1 -SmokeTest
#>
param(
    # Interpreter that creates the build venv.
    [string]$Python = "python",
    # cpu (default) or cuda: which torch build goes into the bundle.
    [ValidateSet("cpu", "cuda")]
    [string]$Torch = "cpu",
    [string]$TorchVersion = "2.13.0",
    # pip index for torch; an empty string uses pip's configured index.
    [string]$TorchIndexUrl = $null,
    # Run packaging\smoke_test.py against the bundle before making the installer.
    [switch]$SmokeTest,
    [switch]$NoInstaller
)

$ErrorActionPreference = "Stop"
Set-StrictMode -Version Latest

function Invoke-Checked {
    param([string]$FilePath, [string[]]$Arguments)
    & $FilePath @Arguments
    if ($LASTEXITCODE -ne 0) {
        throw "$FilePath $($Arguments -join ' ') failed with exit code $LASTEXITCODE"
    }
}

$Root = (Resolve-Path (Join-Path $PSScriptRoot "..")).Path
Set-Location $Root
$Venv = Join-Path $Root "build\venv-windows"
$VenvPython = Join-Path $Venv "Scripts\python.exe"
if ($null -eq $TorchIndexUrl) {
    $TorchIndexUrl = if ($Torch -eq "cpu") { "https://download.pytorch.org/whl/cpu" } else { "https://download.pytorch.org/whl/cu128" }
}
$Version = (Select-String -Path "engine\__init__.py" -Pattern '^__version__ = "([^"]+)"').Matches[0].Groups[1].Value

Write-Host "==> build venv $Venv (torch $TorchVersion, $Torch)"
if (-not (Test-Path $VenvPython)) {
    Invoke-Checked $Python @("-m", "venv", $Venv)
}
$TorchArguments = @("-m", "pip", "install", "--quiet", "torch==$TorchVersion")
if ($TorchIndexUrl) {
    $TorchArguments += @("--index-url", $TorchIndexUrl)
}
Invoke-Checked $VenvPython $TorchArguments
Invoke-Checked $VenvPython @("-m", "pip", "install", "--quiet", $Root, "-r", "packaging\requirements-build.txt")

Write-Host "==> PyInstaller"
$env:SYNOPSIS_TORCH = $Torch
Invoke-Checked $VenvPython @("-m", "PyInstaller", "--noconfirm", "--clean", "--distpath", "dist", "--workpath", "build\pyinstaller", "packaging\synopsis.spec")
$BundleBytes = (Get-ChildItem -Recurse -File "dist\synopsis" | Measure-Object -Sum Length).Sum
Write-Host ("dist\synopsis: {0:N0} MiB" -f ($BundleBytes / 1MB))

if ($SmokeTest) {
    Write-Host "==> smoke test"
    Invoke-Checked $VenvPython @("packaging\smoke_test.py", "dist\synopsis", "--report", "dist\smoke-test-windows.json")
}

if (-not $NoInstaller) {
    Write-Host "==> NSIS installer"
    $Makensis = (Get-Command makensis -ErrorAction SilentlyContinue).Source
    if (-not $Makensis) {
        $Makensis = Join-Path ${env:ProgramFiles(x86)} "NSIS\makensis.exe"
    }
    if (-not (Test-Path $Makensis)) {
        throw "makensis not found: install NSIS 3 (for example 'choco install nsis') and run again"
    }
    $Icon = Join-Path $Root "build\synopsis.ico"
    Invoke-Checked $VenvPython @("-c", "from PIL import Image; Image.open('resources/synopsis.png').save(r'$Icon', sizes=[(16, 16), (32, 32), (48, 48), (256, 256)])")
    $Suffix = if ($Torch -eq "cuda") { "-cuda" } else { "" }
    $Installer = Join-Path $Root "dist\Synopsis-$Version-windows-x64$Suffix-setup.exe"
    Invoke-Checked $Makensis @("/V3", "/DVERSION=$Version", "/DBUNDLE_DIR=$(Join-Path $Root 'dist\synopsis')", "/DICON_FILE=$Icon", "/DOUTPUT_FILE=$Installer", "packaging\windows\synopsis.nsi")
    Write-Host ("{0}: {1:N0} MiB" -f $Installer, ((Get-Item $Installer).Length / 1MB))
}
