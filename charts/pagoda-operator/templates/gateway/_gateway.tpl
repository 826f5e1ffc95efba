{{/* The gateway's names and labels: its own app name, so the operator's selectors never match it. */}}
{{- define "pagoda.gateway.fullname" -}}
{{- printf "%s-gateway" (include "pagoda.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pagoda.gateway.selectorLabels" -}}
app.kubernetes.io/name: pagoda-gateway
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "pagoda.gateway.labels" -}}
{{ include "pagoda.gateway.selectorLabels" . }}
app.kubernetes.io/component: gateway
app.kubernetes.io/part-of: {{ .Chart.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Exactly the calls the gateway makes in a namespace it serves. */}}
{{- define "pagoda.gateway.rules" -}}
# InferenceServices: model names and routing policies (list, watch); a model scaled to zero is
# woken by the gateway.pagoda.dev/wake-requested annotation (patch), which the operator acts on.
- apiGroups: [pagoda.dev]
  resources: [inferenceservices]
  verbs: [list, watch, patch]
# The Ready engine pods behind each InferenceService's Service.
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
{{- end -}}
