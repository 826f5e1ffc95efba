{{/* The release's full name: the release name, with the chart's name unless it already holds it. */}}
{{- define "pagoda.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "pagoda.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "pagoda.labels" -}}
{{ include "pagoda.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "pagoda.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "pagoda.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The namespaces the operator serves when watch.scope is "namespaces". */}}
{{- define "pagoda.watchNamespaces" -}}
{{- if .Values.watch.namespaces -}}
{{- toJson .Values.watch.namespaces -}}
{{- else -}}
{{- toJson (list .Release.Namespace) -}}
{{- end -}}
{{- end -}}

{{/* What the operator does inside a namespace it serves: exactly the calls it makes. */}}
{{- define "pagoda.namespacedRules" -}}
# The resource it serves: kopf watches it and keeps its finalizer and progress annotations;
# the operator reads it fresh and writes its status.
- apiGroups: [pagoda.dev]
  resources: [inferenceservices]
  verbs: [get, list, watch, patch]
- apiGroups: [pagoda.dev]
  resources: [inferenceservices/status]
  verbs: [patch]
# Children carry blockOwnerDeletion owner references; clusters that enforce owner-reference
# permissions ask for this.
- apiGroups: [pagoda.dev]
  resources: [inferenceservices/finalizers]
  verbs: [update]
# The children, written by server-side apply, pruned when the spec drops them, watched so that an
# edit or deletion is undone.
- apiGroups: [""]
  resources: [configmaps, services]
  verbs: [create, get, list, watch, patch, delete]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [create, get, list, watch, patch, delete]
- apiGroups: [networking.k8s.io]
  resources: [ingresses, networkpolicies]
  verbs: [create, get, list, watch, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [create, get, list, watch, patch, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [create, get, list, watch, patch, delete]
- apiGroups: [monitoring.coreos.com]
  resources: [servicemonitors]
  verbs: [create, get, list, patch, delete]
# A multi-node engine's workload (spec.nodes > 1), where LWS is installed; read, not watched.
- apiGroups: [leaderworkerset.x-k8s.io]
  resources: [leaderworkersets]
  verbs: [create, get, list, patch, delete]
# The autoscaler sets the replica count through the Deployment's scale subresource.
- apiGroups: [apps]
  resources: [deployments/scale]
  verbs: [patch]
# Engine pods, watched (only those labelled managed-by=pagoda-operator): which are ready, and
# their addresses for scraping /metrics.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# kopf reports each handler's outcome as an Event on the InferenceService.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end -}}

{{/* kopf's peering: the replicas announce themselves in one object and the highest priority acts. */}}
{{- define "pagoda.peeringRule" -}}
- apiGroups: [kopf.dev]
  resources: [{{ if eq .Values.watch.scope "cluster" }}clusterkopfpeerings{{ else }}kopfpeerings{{ end }}]
  verbs: [list, watch, patch]
{{- end -}}
