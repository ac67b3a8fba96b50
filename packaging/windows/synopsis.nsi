; NSIS recipe for the Synopsis installer on Windows (NSIS 3, Unicode).
;
; Built by packaging/build-windows.ps1 after PyInstaller:
;   makensis /DVERSION=0.1.0 /DBUNDLE_DIR=C:\src\synopsis\dist\synopsis /DICON_FILE=C:\src\synopsis\build\synopsis.ico
;            /DOUTPUT_FILE=C:\src\synopsis\dist\Synopsis-0.1.0-setup.exe packaging\windows\synopsis.nsi
;
; makensis changes into this folder first, so pass absolute paths.
; Installs for the current user only, into %LOCALAPPDATA%\Programs\Synopsis,
; so no administrator rights are needed. Adds a Start-menu entry, an "Open
; with" entry for PDF, Word, text and Markdown files, and an uninstaller
; listed under Settings > Apps.

Unicode true
!include "MUI2.nsh"
!include "FileFunc.nsh"

!ifndef VERSION
  !error "pass the version: /DVERSION=0.1.0"
!endif
!ifndef BUNDLE_DIR
  !error "pass the PyInstaller folder: /DBUNDLE_DIR=dist\synopsis"
!endif
!ifndef OUTPUT_FILE
  !define OUTPUT_FILE "Synopsis-${VERSION}-setup.exe"
!endif
!ifndef ICON_FILE
  !error "pass an .ico made from resources/synopsis.png: /DICON_FILE=build\synopsis.ico"
!endif

!define APP_NAME "Synopsis"
!define APP_EXE "Synopsis.exe"
!define UNINSTALL_KEY "Software\Microsoft\Windows\CurrentVersion\Uninstall\Synopsis"
!define APPLICATION_KEY "Software\Classes\Applications\${APP_EXE}"

Name "${APP_NAME}"
OutFile "${OUTPUT_FILE}"
InstallDir "$LOCALAPPDATA\Programs\${APP_NAME}"
InstallDirRegKey HKCU "${UNINSTALL_KEY}" "InstallLocation"
RequestExecutionLevel user
SetCompressor /SOLID lzma
; torch and Qt need more than the default dictionary to compress well.
SetCompressorDictSize 64
ManifestDPIAware true
BrandingText "${APP_NAME} ${VERSION}"

VIProductVersion "${VERSION}.0"
VIAddVersionKey "ProductName" "${APP_NAME}"
VIAddVersionKey "ProductVersion" "${VERSION}"
VIAddVersionKey "FileVersion" "${VERSION}"
VIAddVersionKey "FileDescription" "${APP_NAME} installer"
VIAddVersionKey "LegalCopyright" "Apache License 2.0"

!define MUI_ICON "${ICON_FILE}"
!define MUI_UNICON "${ICON_FILE}"
!define MUI_ABORTWARNING
!define MUI_FINISHPAGE_RUN "$INSTDIR\${APP_EXE}"
!define MUI_FINISHPAGE_RUN_TEXT "Start ${APP_NAME}"

!insertmacro MUI_PAGE_WELCOME
!insertmacro MUI_PAGE_DIRECTORY
!insertmacro MUI_PAGE_INSTFILES
!insertmacro MUI_PAGE_FINISH
!insertmacro MUI_UNPAGE_CONFIRM
!insertmacro MUI_UNPAGE_INSTFILES
!insertmacro MUI_LANGUAGE "English"

Section "Synopsis" SectionMain
  SectionIn RO
  SetShellVarContext current
  ; A previous version's files would mix with the new ones: remove them first.
  RMDir /r "$INSTDIR\_internal"
  SetOutPath "$INSTDIR"
  ; synopsis-smoke.exe is the build's test driver, not part of the product.
  File /r /x "synopsis-smoke.exe" "${BUNDLE_DIR}\*.*"

  CreateShortcut "$SMPROGRAMS\${APP_NAME}.lnk" "$INSTDIR\${APP_EXE}" "" "$INSTDIR\${APP_EXE}" 0

  ; "Open with" for the document types Synopsis reads.
  WriteRegStr HKCU "${APPLICATION_KEY}" "FriendlyAppName" "${APP_NAME}"
  WriteRegStr HKCU "${APPLICATION_KEY}\shell\open\command" "" '"$INSTDIR\${APP_EXE}" "%1"'
  WriteRegStr HKCU "${APPLICATION_KEY}\SupportedTypes" ".pdf" ""
  WriteRegStr HKCU "${APPLICATION_KEY}\SupportedTypes" ".docx" ""
  WriteRegStr HKCU "${APPLICATION_KEY}\SupportedTypes" ".txt" ""
  WriteRegStr HKCU "${APPLICATION_KEY}\SupportedTypes" ".md" ""

  WriteUninstaller "$INSTDIR\Uninstall.exe"
  WriteRegStr HKCU "${UNINSTALL_KEY}" "DisplayName" "${APP_NAME}"
  WriteRegStr HKCU "${UNINSTALL_KEY}" "DisplayVersion" "${VERSION}"
  WriteRegStr HKCU "${UNINSTALL_KEY}" "DisplayIcon" "$INSTDIR\${APP_EXE}"
  WriteRegStr HKCU "${UNINSTALL_KEY}" "Publisher" "${APP_NAME}"
  WriteRegStr HKCU "${UNINSTALL_KEY}" "InstallLocation" "$INSTDIR"
  WriteRegStr HKCU "${UNINSTALL_KEY}" "UninstallString" '"$INSTDIR\Uninstall.exe"'
  WriteRegStr HKCU "${UNINSTALL_KEY}" "QuietUninstallString" '"$INSTDIR\Uninstall.exe" /S'
  WriteRegDWORD HKCU "${UNINSTALL_KEY}" "NoModify" 1
  WriteRegDWORD HKCU "${UNINSTALL_KEY}" "NoRepair" 1
  ; EstimatedSize is in KiB.
  ${GetSize} "$INSTDIR" "/S=0K" $0 $1 $2
  IntFmt $0 "0x%08X" $0
  WriteRegDWORD HKCU "${UNINSTALL_KEY}" "EstimatedSize" "$0"
SectionEnd

Section "Uninstall"
  SetShellVarContext current
  Delete "$SMPROGRAMS\${APP_NAME}.lnk"
  DeleteRegKey HKCU "${APPLICATION_KEY}"
  DeleteRegKey HKCU "${UNINSTALL_KEY}"
  ; Only the installed files go; settings, history and models in the user's
  ; profile stay, as users expect from an uninstaller.
  RMDir /r "$INSTDIR\_internal"
  Delete "$INSTDIR\Synopsis.exe"
  Delete "$INSTDIR\synopsis-cli.exe"
  Delete "$INSTDIR\Uninstall.exe"
  RMDir "$INSTDIR"
SectionEnd
