-- status.lua: is a reservation's epoch still the brand's, and what time is it on Redis (one
-- clock for every host).  Called by RedisThrottle.send_status.
-- KEYS[1]        the brand's epoch (keys.throttle_epoch_key)
-- ARGV[1]        the reservation's epoch
-- Returns        {same epoch 0/1, Redis TIME in ms as a string}
local tm = redis.call('TIME')
local same = 0
if redis.call('GET', KEYS[1]) == ARGV[1] then same = 1 end
return {same, string.format('%d', tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000))}
