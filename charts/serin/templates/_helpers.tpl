{{/* The chart's name. */}}
{{- define "serin.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: the prefix of every object's name. */}}
{{- define "serin.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "serin.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object, with the selector labels or with serin.labels. */}}
{{- define "serin.commonLabels" -}}
helm.sh/chart: {{ include "serin.chart" . }}
app.kubernetes.io/part-of: serin
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels on objects that carry no selector labels. */}}
{{- define "serin.labels" -}}
{{ include "serin.commonLabels" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Selector labels of the operator's pods. */}}
{{- define "serin.selectorLabels" -}}
app.kubernetes.io/name: {{ include "serin.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Selector labels of the metrics adapter's pods. */}}
{{- define "serin.adapter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "serin.name" . }}-metrics-adapter
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: metrics-adapter
{{- end }}

{{- define "serin.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "serin.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name: with serviceAccount.create=false, name the ServiceAccount the operator runs as" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "serin.adapter.fullname" -}}
{{- printf "%s-metrics-adapter" (include "serin.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "serin.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "serin.adapter.image" -}}
{{- $repository := default .Values.image.repository .Values.metricsAdapter.image.repository }}
{{- $tag := default (default .Chart.AppVersion .Values.image.tag) .Values.metricsAdapter.image.tag }}
{{- printf "%s:%s" $repository $tag }}
{{- end }}

{{/*
Checks of value combinations that the schema cannot express. Each failure names the value and
the fix.
*/}}
{{- define "serin.validate" -}}
{{- if and (eq .Values.rbac.scope "namespaced") (empty .Values.watchNamespaces) }}
{{- fail "rbac.scope=namespaced needs watchNamespaces: list the namespaces the operator may manage (e.g. --set 'watchNamespaces={shop,checkout}'), or use rbac.scope=cluster to watch all namespaces" }}
{{- end }}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail (printf "replicaCount=%d needs leaderElection.enabled=true: without it every replica would reconcile the same Rollouts" (int .Values.replicaCount)) }}
{{- end }}
{{- end }}

{{/*
The operator's permissions: only the verbs Serin uses, one rule per purpose. Used by the
ClusterRole (rbac.scope=cluster) and by each namespace's Role (rbac.scope=namespaced).
e2e/tests/helm_chart.rs removes each rule in turn and shows the operator cannot do its work
without it.
*/}}
{{- define "serin.rules" -}}
# Rollouts: watched (the controller's cache).
- apiGroups: ["serin.dev"]
  resources: ["rollouts"]
  verbs: ["list", "watch"]
# Rollouts: the serin.dev/cleanup finalizer is added and removed with a patch; the plugin's
# requests are annotations the user writes, not the operator.
- apiGroups: ["serin.dev"]
  resources: ["rollouts"]
  verbs: ["patch"]
# Rollout status: written with server-side apply.
- apiGroups: ["serin.dev"]
  resources: ["rollouts/status"]
  verbs: ["patch"]
# Deployments: the user's (observed, scaled) and the primary Serin owns.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["list", "watch"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["create", "patch"]
# Services: root, primary and canary, watched by label; an existing root Service is looked up
# before Serin adopts it.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["create", "patch"]
# HorizontalPodAutoscalers (autoscaling/v2): the user's is observed, the primary's twin written.
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["list", "watch"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["create", "patch"]
# TrafficSplits, every version Serin speaks (v1alpha1-v1alpha4): watched, written, and deleted
# when a Rollout is deleted and the app handed back.
- apiGroups: ["split.smi-spec.io"]
  resources: ["trafficsplits"]
  verbs: ["list", "watch"]
- apiGroups: ["split.smi-spec.io"]
  resources: ["trafficsplits"]
  verbs: ["create", "patch"]
- apiGroups: ["split.smi-spec.io"]
  resources: ["trafficsplits"]
  verbs: ["get", "delete"]
# One Event per transition.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
# The SMI Traffic Metrics API: a Deployment's metrics, through the aggregation layer.
- apiGroups: ["metrics.smi-spec.io"]
  resources: ["deployments"]
  verbs: ["get"]
{{- if .Values.rbac.secrets }}
# Secrets named by webhook and notification settings, in the Rollout's namespace.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}
{{- end }}

{{/*
The Secrets the global notification receivers name, as YAML: namespace -> sorted names.
*/}}
{{- define "serin.notificationSecrets" -}}
{{- $byNamespace := dict }}
{{- range .Values.notifications }}
{{- $ns := .secretRef.namespace }}
{{- $names := get $byNamespace $ns | default (list) }}
{{- $_ := set $byNamespace $ns (append $names .secretRef.name | uniq | sortAlpha) }}
{{- end }}
{{- toYaml $byNamespace }}
{{- end }}

{{/* The leader-election Lease, in the release namespace. */}}
{{- define "serin.leaseRules" -}}
# A Lease is created once; it cannot be limited by name.
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["create"]
# Then read and renewed (or taken over), by name.
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  resourceNames: [{{ .Values.leaderElection.leaseName | quote }}]
  verbs: ["get", "update", "patch"]
{{- end }}
