{{/* Names and labels shared by every object. */}}
{{- define "cloister.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "cloister.labels" -}}
app.kubernetes.io/name: cloister
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: cloister
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- with .root.Values.organisation }}
cloister.dev/organisation: {{ . | quote }}
{{- end }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "cloister.selector" -}}
app.kubernetes.io/name: cloister
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The image reference: repository@digest when a digest is pinned. */}}
{{- define "cloister.image" -}}
{{- $img := .Values.image -}}
{{- if $img.digest -}}
{{ $img.repository }}@{{ $img.digest }}
{{- else -}}
{{ $img.repository }}:{{ required "image.tag or image.digest is required (./deploy/build-image prints both)" $img.tag }}
{{- end -}}
{{- end -}}

{{- define "cloister.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{ default (include "cloister.fullname" .) .Values.serviceAccount.name }}
{{- else -}}
{{ default "default" .Values.serviceAccount.name }}
{{- end -}}
{{- end -}}

{{/* The ledger API URL: ledger.url, else this release's validator. */}}
{{- define "cloister.ledgerURL" -}}
{{- if .Values.ledger.url -}}
{{ .Values.ledger.url }}
{{- else if .Values.validator.enabled -}}
http://{{ include "cloister.fullname" . }}-validator-api:{{ .Values.validator.apiPort }}
{{- else -}}
{{- fail "ledger.url is required when validator.enabled is false" -}}
{{- end -}}
{{- end -}}

{{/* Pod metadata annotations: scrape hints for Prometheus. */}}
{{- define "cloister.scrapeAnnotations" -}}
{{- if .root.Values.metrics.annotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
prometheus.io/scheme: {{ .scheme }}
{{- end }}
{{- end -}}

{{/* The container security context of every component but the node. */}}
{{- define "cloister.restrictedContainer" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
Scheduling of one component: its own nodeSelector/tolerations/affinity,
plus the confidential pool when it applies (the node always; others with
confidential.applyToAll).
*/}}
{{- define "cloister.scheduling" -}}
{{- $c := .root.Values.confidential -}}
{{- $tee := and $c.tee (or .tee $c.applyToAll) -}}
{{- $sel := dict -}}
{{- $rc := "" -}}
{{- if $tee }}{{- $rc = get $c.runtimeClassName $c.tee -}}{{- end -}}
{{- /* With a runtime class (Confidential Containers) the RuntimeClass's own
       scheduling places the pod; the CVM pool selector is for pools whose
       nodes are confidential VMs themselves. */ -}}
{{- if and $tee (not $rc) }}{{- $sel = merge $sel (get $c.nodeSelectors $c.tee | default dict) -}}{{- end -}}
{{- $sel = merge (deepCopy .values.nodeSelector) $sel -}}
{{- with $sel }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- $tol := concat (.values.tolerations | default list) (ternary $c.tolerations list (not (not $tee))) -}}
{{- with $tol }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $rc }}
runtimeClassName: {{ . }}
{{- end }}
{{- end -}}

{{- define "cloister.podCommon" -}}
serviceAccountName: {{ include "cloister.serviceAccountName" .root }}
automountServiceAccountToken: false
enableServiceLinks: false
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "cloister.pvc" -}}
- metadata:
    name: data
  spec:
    accessModes:
      {{- toYaml .accessModes | nindent 6 }}
    {{- with .storageClassName }}
    storageClassName: {{ . }}
    {{- end }}
    resources:
      requests:
        storage: {{ .size }}
{{- end -}}
