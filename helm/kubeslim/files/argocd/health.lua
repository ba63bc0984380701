-- Argo CD health check for kubeslim.io/QuantizationJob.
-- Install: argocd-cm key `resource.customizations.health.kubeslim.io_QuantizationJob`.
-- Mirrors kstatus: a spec not yet observed or a run in flight is Progressing, Ready=True is
-- Healthy, Stalled=True (including a failed accuracy gate) is Degraded, a Job held by Kueue is
-- Suspended (status.reason Queued).
local hs = {}
local function condition(t)
  if obj.status == nil or obj.status.conditions == nil then return nil end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == t then return c end
  end
  return nil
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the kubeslim operator to pick up this QuantizationJob"
  return hs
end
if obj.metadata ~= nil and obj.metadata.generation ~= nil and obj.status.observedGeneration ~= obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "The operator has not yet observed generation " .. tostring(obj.metadata.generation)
  return hs
end

local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = (stalled.reason or "Stalled") .. ": " .. (stalled.message or obj.status.message or "")
  return hs
end
local ready = condition("Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or "int8 model ready"
  return hs
end
if obj.status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = (obj.status.reason or "Failed") .. ": " .. (obj.status.message or "")
  return hs
end
if obj.status.reason == "Queued" then
  hs.status = "Suspended"
  hs.message = obj.status.message or "The Job is suspended (queued)"
  return hs
end
hs.status = "Progressing"
if obj.status.stage ~= nil and obj.status.stage ~= "" then
  hs.message = obj.status.stage
elseif obj.status.message ~= nil and obj.status.message ~= "" then
  hs.message = obj.status.message
else
  hs.message = obj.status.phase or "Pending"
end
return hs
