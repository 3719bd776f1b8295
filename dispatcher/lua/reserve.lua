-- reserve.lua: book one message in every throttle bucket at the earliest slot they all allow,
-- all or none (sliding log with future booking; the proof is in dispatcher/throttle/redis.py).
-- Called by RedisThrottle.reserve / reserve_many.
-- KEYS[1]        the brand's epoch (keys.throttle_epoch_key)
-- KEYS[1+j]      bucket j (keys.bucket_key), j = 1..nb
-- KEYS[1+nb+j]   bucket j's running cost sum (keys.throttle_sum_key)
-- ARGV[1]        now_ms ('' -> Redis TIME)
-- ARGV[2]        horizon_ms (latest slot accepted)
-- ARGV[3]        member prefix (the reservation id)
-- ARGV[4]        epoch candidate (set if the brand has none); '' when the brand's throttle is
--                seeded from the outbox (seed.lua creates the epoch): then no epoch answers
--                {-1, now, now, '', '', ..., 0} and nothing is taken
-- ARGV[5]        nb, the number of buckets
-- ARGV[5+j]      bucket j as 'kind:limit:L_ms:cost:bounds': kind 'w' (sliding) or 'c'
--                (calendar), L_ms (w: period+grace; c: grace), bounds (c: 'b1,b2,...' period
--                starts in ms; w: empty)
-- ARGV[6+nb]     '' or the member prefix ('s<row id>') of the row's in-flight entry from a
--                re-seed, removed first (the row is reserving: it was not sent)
-- Returns        {allowed 0/1, slot_ms, now_ms, epoch, charged_1, ..., charged_nb, binding}
--                binding: index j of the bucket that set the slot (the last to move it, or the
--                one beyond the calendar range); 0 when the slot is now (no limit held it back)
--
-- Fast path: a sliding bucket keeps the total cost of its log in a companion key.  The log holds
-- every booking that can still share a window with a new one, so when total + cost <= limit no
-- window can overflow and the log need not be read (O(1) amortised: expired entries are read
-- once, when they are trimmed).  Otherwise, or when the sum key is missing, the log is read and
-- the sum recomputed from it, so the sum heals itself.
local now
if ARGV[1] == '' then
  local tm = redis.call('TIME')
  now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
else
  now = tonumber(ARGV[1])
end
local horizon = tonumber(ARGV[2])
local rid = ARGV[3]
local nb = tonumber(ARGV[5])
-- a brand re-seeded from the outbox after a loss (ARGV[4] ''): no epoch, no reservation
local epoch = redis.call('GET', KEYS[1])
if (not epoch) and ARGV[4] == '' then
  local out = {-1, string.format('%d', now), string.format('%d', now), ''}
  for j = 1, nb do out[#out + 1] = '' end
  out[#out + 1] = 0
  return out
end

local function lower(S, n, v) -- first index with S[i] >= v
  local lo, hi = 1, n + 1
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if S[mid] < v then lo = mid + 1 else hi = mid end
  end
  return lo
end
local function upper(S, n, v) -- first index with S[i] > v
  local lo, hi = 1, n + 1
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if S[mid] <= v then lo = mid + 1 else hi = mid end
  end
  return lo
end

-- read a sliding bucket's log (scores S, prefix costs P) and recompute its sum from it
local function wload(b)
  local raw = redis.call('ZRANGEBYSCORE', b.key, '(' .. (now - b.L), '+inf', 'WITHSCORES')
  local S, P, n = {}, {0}, 0
  for i = 1, #raw, 2 do
    n = n + 1
    S[n] = tonumber(raw[i + 1])
    P[n + 1] = P[n] + tonumber(string.match(raw[i], ':(%d+)$'))
  end
  b.S, b.P, b.n = S, P, n
  if b.sum ~= P[n + 1] then b.sum = P[n + 1]; b.dirty = true end
end
-- store a sliding bucket's sum with its log's expiry (or drop it with the log)
local function wsave(b)
  local ttl = redis.call('PTTL', b.key)
  if ttl == -2 then
    redis.call('DEL', b.skey)
  elseif ttl == -1 then
    redis.call('SET', b.skey, string.format('%d', b.sum))
  else
    redis.call('SET', b.skey, string.format('%d', b.sum), 'PX', ttl)
  end
end

local B = {}
for j = 1, nb do
  local kind, limit, L, cost, bounds = string.match(ARGV[5 + j], '^(%a):(%d+):(%d+):(%d+):(.*)$')
  local b = {key = KEYS[1 + j], kind = kind, limit = tonumber(limit), L = tonumber(L),
             cost = tonumber(cost)}
  if b.kind == 'w' then
    b.skey = KEYS[1 + nb + j]
    -- the row reserving was counted as in flight by a re-seed (seed.lua): it was not sent, its
    -- booking replaces that entry (the sum is recomputed from the log)
    if ARGV[6 + nb] and ARGV[6 + nb] ~= '' then
      if redis.call('ZREM', b.key, ARGV[6 + nb] .. ':' .. b.cost) == 1 then
        redis.call('DEL', b.skey)
      end
    end
    local gone = redis.call('ZRANGEBYSCORE', b.key, '-inf', now - b.L)
    local sum = redis.call('GET', b.skey)
    if #gone > 0 then
      redis.call('ZREMRANGEBYSCORE', b.key, '-inf', now - b.L)
      b.dirty = true
    end
    if sum and redis.call('EXISTS', b.key) == 1 then
      sum = tonumber(sum)
      for i = 1, #gone do sum = sum - tonumber(string.match(gone[i], ':(%d+)$')) end
      b.sum = sum
    elseif sum or redis.call('EXISTS', b.key) == 1 then
      wload(b) -- no sum, or a sum without a log: recompute from the log
    else
      b.sum = 0
    end
  else
    b.bounds = {}
    for s in string.gmatch(bounds, '[^,]+') do b.bounds[#b.bounds + 1] = tonumber(s) end
    b.used = {}
  end
  B[j] = b
end

-- sliding: does [x, x+L) stay within limit for every x in (t-L, t] once cost is added at t?
local function wfits(b, t)
  local S, P, n, L = b.S, b.P, b.n, b.L
  local room = b.limit - b.cost
  if P[lower(S, n, t + L)] - P[lower(S, n, t)] > room then return false end
  local i = upper(S, n, t - L)
  while i <= n and S[i] <= t do
    local x = S[i]
    if P[lower(S, n, x + L)] - P[i] > room then return false end
    i = upper(S, n, x)
  end
  return true
end
-- the latest booked slot (-inf for an empty log), read once
local function wlast(b)
  if b.last == nil then
    local top = redis.call('ZRANGE', b.key, -1, -1, 'WITHSCORES')
    if top[2] then b.last = tonumber(top[2]) else b.last = -math.huge end
  end
  return b.last
end
-- monotone case, every booking at or before t: the windows containing t' >= t hold only
-- entries <= t', the fullest one is (t'-L, t'], and it fits once the oldest entries worth
-- `excess` have left it: t' = max(t, S[k] + L), S[k] the entry where their cost reaches it
-- (at most `excess` entries read).  nil if the sum and the log disagree.
local function wmono(b, t)
  local excess = b.sum + b.cost - b.limit
  local head = redis.call('ZRANGE', b.key, 0, excess - 1, 'WITHSCORES')
  local acc = 0
  for i = 1, #head, 2 do
    acc = acc + tonumber(string.match(head[i], ':(%d+)$'))
    if acc >= excess then return math.max(t, tonumber(head[i + 1]) + b.L) end
  end
  return nil
end
-- earliest t' >= t that fits: t itself or some entry + L (the right end of a full stretch)
local function wnext(b, t)
  if b.sum + b.cost <= b.limit then return t end -- no window can overflow
  if b.S == nil and wlast(b) <= t then
    local t2 = wmono(b, t)
    if t2 ~= nil then return t2 end
  end
  if b.S == nil then wload(b) end
  if wfits(b, t) then return t end
  local S, n = b.S, b.n
  local i = upper(S, n, t - b.L)
  while i <= n do
    local c = S[i] + b.L
    if wfits(b, c) then return c end
    i = upper(S, n, S[i])
  end
  return t -- unreachable: after the last entry + L the window is empty
end

local function cperiod(b, t) -- index p with bounds[p] <= t < bounds[p+1]
  local bd = b.bounds
  for p = 1, #bd - 1 do
    if bd[p] <= t and t < bd[p + 1] then return p end
  end
  return nil
end
local function cused(b, p)
  local f = tostring(b.bounds[p])
  if b.used[f] == nil then b.used[f] = tonumber(redis.call('HGET', b.key, f) or '0') end
  return b.used[f]
end
-- the periods a send in [t, t+grace] may count in
local function cfields(b, p, t)
  local f = {p}
  if t + b.L >= b.bounds[p + 1] then
    if p + 1 < #b.bounds then f[2] = p + 1 else return nil end
  end
  return f
end
local function cnext(b, t)
  while true do
    local p = cperiod(b, t)
    if p == nil then return nil end
    local fs = cfields(b, p, t)
    if fs == nil then return nil end
    local ok = true
    for _, q in ipairs(fs) do
      if cused(b, q) + b.cost > b.limit then ok = false end
    end
    if ok then return t end
    t = b.bounds[p + 1]
  end
end

local t = now
local unknown = false
local guard = 0
local binding = 0
while true do
  local moved = false
  for j = 1, nb do
    local b = B[j]
    local t2
    if b.kind == 'w' then t2 = wnext(b, t) else t2 = cnext(b, t) end
    if t2 == nil then unknown = true; binding = j; break end
    if t2 > t then t = t2; moved = true; binding = j end
  end
  guard = guard + 1
  if unknown or not moved or guard > 100000 then break end
end

if not epoch then
  epoch = ARGV[4]
  redis.call('SET', KEYS[1], epoch, 'PX', 172800000)
end

local allowed = 0
if (not unknown) and (t - now <= horizon) then allowed = 1 end
local out = {allowed, string.format('%d', t), string.format('%d', now), epoch}
for j = 1, nb do
  local b = B[j]
  local charged = ''
  if allowed == 1 then
    if b.kind == 'w' then
      local last = wlast(b)
      redis.call('ZADD', b.key, t, rid .. ':' .. b.cost)
      local keep = math.max(last, t) + b.L - now + 1000
      if redis.call('PTTL', b.key) < keep then redis.call('PEXPIRE', b.key, keep) end
      b.sum = b.sum + b.cost
      b.dirty = true
    else
      local p = cperiod(b, t)
      local fs = cfields(b, p, t)
      local names = {}
      local lastq = p
      for _, q in ipairs(fs) do
        redis.call('HINCRBY', b.key, tostring(b.bounds[q]), b.cost)
        names[#names + 1] = tostring(b.bounds[q])
        lastq = q
      end
      charged = table.concat(names, ',')
      -- drop periods that ended, keep the hash until the last charged period ends
      local pn = cperiod(b, now)
      if pn ~= nil then
        local fields = redis.call('HKEYS', b.key)
        for _, f in ipairs(fields) do
          if tonumber(f) < b.bounds[pn] then redis.call('HDEL', b.key, f) end
        end
      end
      local keep = b.bounds[lastq + 1] - now + 60000
      if redis.call('PTTL', b.key) < keep then redis.call('PEXPIRE', b.key, keep) end
    end
  end
  if b.dirty then wsave(b) end
  out[#out + 1] = charged
end
out[#out + 1] = binding
if allowed == 1 then
  local keep = t - now + 172800000
  if redis.call('PTTL', KEYS[1]) < keep then redis.call('PEXPIRE', KEYS[1], keep) end
end
return out
